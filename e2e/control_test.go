package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// TestControlSocketSecurity: other users are refused (by file mode, and by
// SO_PEERCRED when the mode would let them in), group members are let in,
// and garbage gets errors while the daemon keeps serving.
func TestControlSocketSecurity(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Config: "control_group = \"nogroup\"\n"})
	fi, err := os.Stat(d.Control)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("control socket mode %v, want 0660", fi.Mode().Perm())
	}

	t.Run("malformed requests", func(t *testing.T) {
		for _, tc := range []struct{ name, send, want string }{
			{"garbage", "garbage\n", "malformed request"},
			{"unknown command", `{"v":1,"cmd":"explode"}` + "\n", `unknown command "explode"`},
			{"wrong version", `{"v":9,"cmd":"status"}` + "\n", "unsupported control protocol version 9"},
			{"oversized", `{"v":1,"cmd":"` + strings.Repeat("x", 100<<10) + "\"}\n", "request longer than"},
			{"truncated", `{"v":1,"cmd":"sta`, "truncated request"},
		} {
			c, err := net.Dial("unix", d.Control)
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte(tc.send))
			c.(*net.UnixConn).CloseWrite()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadBytes('\n')
			c.Close()
			var r ctl.Response
			if err := json.Unmarshal(line, &r); err != nil || r.OK || !strings.Contains(r.Error, tc.want) {
				t.Errorf("%s: got %q, want an error containing %q", tc.name, line, tc.want)
			}
		}
		if st := d.MustStatus(); st.State != ctl.StateServing {
			t.Fatalf("state %s after bad requests", st.State)
		}
		if r := Zfetch(t, "-q", "-o", "-", d.URL("/nothing")); r.Code != 3 {
			t.Fatalf("daemon not serving after bad control requests: %d %s", r.Code, r.Stderr)
		}
	})

	t.Run("other users", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("not root: cannot run zctl as another user (setpriv needs root)")
		}
		nogroup, err := user.LookupGroup("nogroup")
		if err != nil {
			t.Skip("no nogroup group")
		}
		// Let others reach the directory and the binary.
		os.Chmod(filepath.Dir(d.Control), 0o755)
		os.Chmod(binDir, 0o755)
		as := func(gid string) Result {
			cmd := exec.Command("setpriv", "--reuid=65534", "--regid="+gid, "--clear-groups", zctlBin, "-s", d.Control, "status", "--json")
			var out, errb strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			return Result{out.String(), errb.String(), code}
		}
		// The file mode keeps a stranger out before the daemon is asked.
		if r := as("1"); r.Code != 3 || !strings.Contains(r.Stderr, "permission denied") {
			t.Fatalf("stranger through mode 0660: exit %d %q", r.Code, r.Stderr)
		}
		// With the mode opened up, the daemon's SO_PEERCRED check refuses.
		os.Chmod(d.Control, 0o666)
		if r := as("1"); r.Code != 1 || !strings.Contains(r.Stderr, "permission denied: uid 65534") {
			t.Fatalf("stranger past the file mode: exit %d %q", r.Code, r.Stderr)
		}
		// A member of control_group is let in.
		if r := as(nogroup.Gid); r.Code != 0 || !strings.Contains(r.Stdout, `"state": "serving"`) {
			t.Fatalf("control_group member: exit %d %q %q", r.Code, r.Stdout, r.Stderr)
		}
		if !d.LogHas(5*time.Second, "control connection refused") {
			t.Error("refusal not logged")
		}
		// A reload that takes the group out takes its members' access
		// away, and gives the socket file back the daemon's group; one
		// that puts it back lets them in again.
		setGroup := func(group string) {
			t.Helper()
			cfg, err := os.ReadFile(d.Config)
			if err != nil {
				t.Fatal(err)
			}
			var lines []string
			for _, l := range strings.Split(string(cfg), "\n") {
				if !strings.HasPrefix(l, "control_group") {
					lines = append(lines, l)
				}
			}
			lines = append(lines, fmt.Sprintf("control_group = %q", group))
			os.WriteFile(d.Config, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
			if r := d.Zctl("reload", "--wait"); r.Code != 0 {
				t.Fatalf("reload with control_group %q: exit %d: %s", group, r.Code, r.Stderr)
			}
		}
		fileGID := func() uint32 {
			var st syscall.Stat_t
			if err := syscall.Lstat(d.Control, &st); err != nil {
				t.Fatal(err)
			}
			return st.Gid
		}
		setGroup("")
		if r := as(nogroup.Gid); r.Code != 1 || !strings.Contains(r.Stderr, "permission denied: uid 65534") {
			t.Fatalf("member of a group taken out by a reload: exit %d %q", r.Code, r.Stderr)
		}
		if g := fileGID(); g != uint32(os.Getegid()) {
			t.Errorf("socket group %d after control_group was taken out, want %d", g, os.Getegid())
		}
		setGroup("nogroup")
		if r := as(nogroup.Gid); r.Code != 0 {
			t.Fatalf("member of a group put back by a reload: exit %d %q", r.Code, r.Stderr)
		}
		if g := fileGID(); strconv.Itoa(int(g)) != nogroup.Gid {
			t.Errorf("socket group %d, want nogroup's %s", g, nogroup.Gid)
		}
		// A group that does not exist fails the reload and changes nothing.
		cfg, _ := os.ReadFile(d.Config)
		os.WriteFile(d.Config, []byte(strings.Replace(string(cfg), `control_group = "nogroup"`, `control_group = "no-such-group-zfs"`, 1)), 0o644)
		if r := d.Zctl("reload"); r.Code == 0 || !strings.Contains(r.Stderr, "no-such-group-zfs") {
			t.Errorf("reload with an unknown group: exit %d %q", r.Code, r.Stderr)
		}
		if r := as(nogroup.Gid); r.Code != 0 {
			t.Errorf("member after a failed reload: exit %d %q", r.Code, r.Stderr)
		}
		_ = strconv.Itoa
	})
}

// TestZctlControlConnectionsBusy: a daemon with all its control connections
// open refuses one more without reading its request, and zctl exits with
// the status of a refusal by the daemon, 1, saying so (not 3: the daemon
// was reached and answered). The command was not carried out, so it can be
// run again; once a connection closes, it is.
func TestZctlControlConnectionsBusy(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{})
	var open []*ctl.Client
	for range ctl.DefaultMaxConns {
		c, err := ctl.Dial(d.Control)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// A round trip: the daemon holds this connection now.
		if _, err := c.Do(ctl.Request{Cmd: ctl.CmdStatus}, nil); err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	want := fmt.Sprintf("zctl: too many control connections (%d); try again\n", ctl.DefaultMaxConns)
	if r := d.Zctl("drain"); r.Code != 1 || r.Stderr != want {
		t.Fatalf("zctl drain with %d control connections open: exit %d, stderr %q; want 1 and %q", len(open), r.Code, r.Stderr, want)
	}
	open[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := d.Zctl("status", "--json")
		if r.Code == 0 {
			break
		}
		if r.Code != 1 || r.Stderr != want || time.Now().After(deadline) {
			t.Fatalf("zctl status after a control connection closed: exit %d, stderr %q", r.Code, r.Stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := d.MustStatus(); st.State != ctl.StateServing {
		t.Errorf("state %s: the refused drain was carried out", st.State)
	}
}
