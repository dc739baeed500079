package zctl

import (
	"fmt"
	"strings"
	"time"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/internal/human"
)

func (e *env) drain(args []string) error {
	fs := e.subFlags("drain", "drain [--wait] [--timeout DUR]")
	wait := fs.Bool("wait", false, "show the remaining transfers until every one has finished and the daemon has exited")
	timeout := fs.Duration("timeout", 0, "cut off what is left after `DUR` (default: the daemon's drain_timeout)")
	if err := parseSub(fs, args); err != nil {
		return err
	}
	req := ctl.Request{Cmd: ctl.CmdDrain, Wait: *wait}
	if cli.Given(fs, "timeout") {
		if *timeout <= 0 {
			return cli.Usagef("--timeout wants a positive duration such as 30s or 5m, not %s", timeout)
		}
		req.Timeout = timeout.String()
	}
	// A line when the set of transfers changes, else one every 5 s: the
	// percentages and the countdown alone are not worth a line each.
	var lastKey string
	var lastAt time.Time
	r, err := e.do(req, func(p *ctl.Response) {
		now := time.Now()
		if k := transferKey(p.Status); k != lastKey || now.Sub(lastAt) >= 5*time.Second {
			fmt.Fprintln(e.stdout, remaining(p.Status, now))
			lastKey, lastAt = k, now
		}
	})
	if err != nil {
		return err
	}
	if *wait {
		fmt.Fprintln(e.stdout, "drained: every transfer finished; zfs-serve has exited")
		return nil
	}
	fmt.Fprintln(e.stdout, r.Message)
	return nil
}

// remaining summarises the transfers a drain is waiting for, as of now.
func remaining(st *ctl.Status, now time.Time) string {
	if st == nil {
		return "waiting..."
	}
	n := len(st.Transfers) + st.TransfersOmitted
	if n == 0 {
		return fmt.Sprintf("waiting for %d workers to exit", st.Totals.Workers)
	}
	shown := min(len(st.Transfers), 3)
	parts := make([]string, 0, shown+1)
	for _, t := range st.Transfers[:shown] {
		parts = append(parts, fmt.Sprintf("%s %s (%s)", printable(t.Path), percent(t.Sent, t.Total), t.Client))
	}
	if n > shown {
		parts = append(parts, fmt.Sprintf("+%d more", n-shown))
	}
	line := fmt.Sprintf("waiting for %d transfers: %s", n, strings.Join(parts, ", "))
	if st.DrainDeadline != nil {
		line += fmt.Sprintf("; cut off in %s", human.Duration(st.DrainDeadline.Sub(now)))
	}
	return line
}

// transferKey identifies the set of transfers in st.
func transferKey(st *ctl.Status) string {
	if st == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d|", st.Totals.Workers, st.TransfersOmitted)
	for _, t := range st.Transfers {
		fmt.Fprintf(&b, "%d %s %s|", t.WorkerPID, t.Client, t.Path)
	}
	return b.String()
}
