package zctl

import (
	"fmt"

	"github.com/zfs-serve/zfs-serve/ctl"
)

func (e *env) kill(args []string) error {
	fs := e.subFlags("kill", "kill")
	if err := parseSub(fs, args); err != nil {
		return err
	}
	r, err := e.do(ctl.Request{Cmd: ctl.CmdKill}, nil)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, r.Message)
	return nil
}
