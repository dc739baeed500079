package zctl

import (
	"fmt"

	"github.com/zfs-serve/zfs-serve/ctl"
)

func (e *env) reload(args []string) error {
	fs := e.subFlags("reload", "reload [--wait]")
	wait := fs.Bool("wait", false, "return only once the previous generation has drained too")
	if err := parseSub(fs, args); err != nil {
		return err
	}
	var last string
	r, err := e.do(ctl.Request{Cmd: ctl.CmdReload, Wait: *wait}, func(p *ctl.Response) {
		if line := remaining(p.Status); *wait && line != last && p.Status != nil && p.Status.State == ctl.StateServing {
			fmt.Fprintln(e.stdout, "previous generation: "+line)
			last = line
		}
	})
	if err != nil {
		return fmt.Errorf("reload failed: %w", err)
	}
	fmt.Fprintln(e.stdout, "reloaded: "+r.Message)
	return nil
}
