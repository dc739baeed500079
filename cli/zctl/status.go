package zctl

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/internal/human"
)

func (e *env) status(args []string) error {
	fs := e.subFlags("status", "status [--json]")
	asJSON := fs.Bool("json", false, "print the status as JSON (stable for scripts)")
	if err := parseSub(fs, args); err != nil {
		return err
	}
	r, err := e.do(ctl.Request{Cmd: ctl.CmdStatus}, nil)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r.Status)
	}
	writeStatus(e.stdout, r.Status, time.Now())
	return nil
}

// writeStatus prints the status table documented in docs/CONTROL.md.
func writeStatus(w io.Writer, st *ctl.Status, now time.Time) {
	fmt.Fprintf(w, "zfs-serve %s  %s  pid %d  up %s  generation %d\n", st.Version, st.State, st.PID,
		human.Duration(time.Duration(st.Uptime*float64(time.Second))), st.Generation)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "config\t%s\n", st.Config)
	fmt.Fprintf(tw, "root\t%s (%s)\n", st.Root, st.ZeroCopy)
	fmt.Fprintf(tw, "control\t%s\n", st.Control)
	var ls []string
	accepting := false
	for _, l := range st.Listeners {
		s := l.Name + " " + l.Addr
		if l.Activated {
			s += " (socket-activated)"
		}
		ls = append(ls, s)
		// The metrics listener stays through a drain; it takes no files.
		accepting = accepting || l.Name != "metrics"
	}
	if !accepting {
		ls = append([]string{"none (not accepting)"}, ls...)
	}
	fmt.Fprintf(tw, "listen\t%s\n", strings.Join(ls, ", "))
	t := st.Totals
	fmt.Fprintf(tw, "totals\t%d workers, %d active, %d connections, %s sent, %d restarts\n",
		t.Workers, t.Active, t.Connections, human.Bytes(int64(t.BytesSent)), t.Restarts)
	fmt.Fprintf(tw, "served\t%d native, %d http requests (%s over http)\n",
		t.NativeRequests, t.HTTPRequests, human.Bytes(int64(t.HTTPBytesSent)))
	if st.DrainDeadline != nil {
		fmt.Fprintf(tw, "drain\tremaining transfers are cut off in %s\n", human.Duration(st.DrainDeadline.Sub(now)))
	}
	if st.LastReload != "" {
		fmt.Fprintf(tw, "reload\t%s\n", printable(st.LastReload))
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tGEN\tSLOT\tSTATE\tACTIVE\tCONNS\tSENT\tRESTARTS\tUP\tLAST EXIT")
	for _, wk := range st.Workers {
		pid, up := fmt.Sprint(wk.PID), human.Duration(now.Sub(wk.Started))
		if wk.PID == 0 {
			pid, up = "-", "-"
			if wk.NextStart != nil {
				up = "in " + human.Duration(wk.NextStart.Sub(now))
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%d\t%s\t%d\t%s\t%s\n", pid, wk.Generation, wk.Slot, wk.State,
			wk.Active, wk.Connections, human.Bytes(int64(wk.BytesSent)), wk.Restarts, up, dash(wk.LastExit))
	}
	tw.Flush()

	fmt.Fprintf(w, "\nTRANSFERS (%d)\n", len(st.Transfers)+st.TransfersOmitted)
	if len(st.Transfers)+st.TransfersOmitted == 0 {
		fmt.Fprintln(w, "none")
		return
	}
	if len(st.Transfers) > 0 {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "CLIENT\tPROTO\tWORKER\tPATH\tSENT\tTOTAL\tDONE\tAGE")
		for _, x := range st.Transfers {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", x.Client, dash(x.Protocol), x.WorkerPID, printable(x.Path), human.Bytes(x.Sent),
				human.Bytes(x.Total), percent(x.Sent, x.Total), human.Duration(time.Duration(x.Age*float64(time.Second))))
		}
		tw.Flush()
	}
	if st.TransfersOmitted > 0 {
		fmt.Fprintf(w, "... and %d more (see --json)\n", st.TransfersOmitted)
	}
}

func percent(a, b int64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(a)/float64(b))
}

// printable returns s as it is if every character in it is printable,
// else quoted with Go escapes. Paths come from clients and file names:
// a tab or newline would break the table, and an escape sequence would
// reach the operator's terminal.
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	return strconv.Quote(s)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
