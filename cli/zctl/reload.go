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
	last := -1
	r, err := e.do(ctl.Request{Cmd: ctl.CmdReload, Wait: *wait}, func(p *ctl.Response) {
		if p.Status == nil || p.Status.State != ctl.StateServing {
			return // the new generation is not serving yet
		}
		if n := oldTransfers(p.Status); n != last {
			fmt.Fprintf(e.stdout, "new generation %d serving; waiting for %d transfers of older generations\n", p.Status.Generation, n)
			last = n
		}
	})
	if err != nil {
		return fmt.Errorf("reload failed: %w", err)
	}
	fmt.Fprintln(e.stdout, "reloaded: "+r.Message)
	return nil
}

// oldTransfers counts transfers served by workers of older generations.
func oldTransfers(st *ctl.Status) int {
	old := map[int]bool{}
	for _, w := range st.Workers {
		if w.Generation < st.Generation {
			old[w.PID] = true
		}
	}
	n := 0
	for _, t := range st.Transfers {
		if old[t.WorkerPID] {
			n++
		}
	}
	return n
}
