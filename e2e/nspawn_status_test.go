package e2e

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

func (z *zfsContainer) socketActivation(t *testing.T) {
	z.Must("systemctl", "stop", unitService, unitSocket, unitControl)
	z.Must("systemctl", "start", unitSocket)
	if s := z.Show(unitService, "ActiveState")["ActiveState"]; s != "inactive" {
		t.Fatalf("%s is %q with only %s started, want inactive", unitService, s, unitSocket)
	}
	if s := z.Show(unitControl, "ActiveState")["ActiveState"]; s != "inactive" {
		t.Fatalf("%s is %q, want inactive until the service pulls it in", unitControl, s)
	}
	// The first connection, from the host, starts the service.
	z.fetch(t, "/small.bin", z.smallSHA)
	if s := z.Show(unitService, "ActiveState")["ActiveState"]; s != "active" {
		t.Errorf("%s is %q after the first connection, want active", unitService, s)
	}
	if s := z.Show(unitControl, "ActiveState")["ActiveState"]; s != "active" {
		t.Errorf("%s is %q once the service runs, want active (Requires=)", unitControl, s)
	}
	// From inside the container too, the big file.
	z.Must("zfetch", "-q", "-o", "/tmp/big.bin", "zfs://127.0.0.1:7070/big.bin")
	if sum := strings.Fields(z.Must("sha256sum", "/tmp/big.bin")); len(sum) == 0 || sum[0] != z.bigSHA {
		t.Errorf("zfetch inside: sha256 %v, want %s", sum, z.bigSHA)
	}
	z.Must("rm", "/tmp/big.bin")
}

var statusTextRE = regexp.MustCompile(`^serving: generation (\d+), (\d+) workers?, \d+ connections? in flight$`)

func (z *zfsContainer) statusAndPermissions(t *testing.T) {
	st := z.status(t)
	p := z.Show(unitService, "MainPID", "StatusText")
	if p["MainPID"] != strconv.Itoa(st.PID) {
		t.Errorf("MainPID %s, but zctl status says the supervisor is %d", p["MainPID"], st.PID)
	}
	m := statusTextRE.FindStringSubmatch(p["StatusText"])
	if m == nil || m[1] != strconv.Itoa(st.Generation) || m[2] != strconv.Itoa(len(WorkerPIDs(st))) {
		t.Errorf("StatusText %q; status has generation %d and %d workers", p["StatusText"], st.Generation, len(WorkerPIDs(st)))
	}
	if len(st.Listeners) != 1 || st.Listeners[0] != (ctl.Listener{Name: "zfs", Addr: "127.0.0.1:7070", Activated: true}) {
		t.Errorf("listeners %+v, want the socket-activated zfs on 127.0.0.1:7070", st.Listeners)
	}
	if st.Control != "/run/zfs-serve/control.sock" || st.Version != z.pkg.version || st.Root != servedDir {
		t.Errorf("control %q version %q root %q", st.Control, st.Version, st.Root)
	}
	// The supervisor and its workers run as zfs-serve; only the supervisor
	// has NOTIFY_SOCKET.
	uid := strings.Split(strings.TrimSpace(z.Must("getent", "passwd", "zfs-serve")), ":")[2]
	for i, pid := range append([]int{st.PID}, WorkerPIDs(st)...) {
		b, err := os.ReadFile(z.Path(fmt.Sprintf("/proc/%d/status", pid)))
		if err != nil {
			t.Fatal(err)
		}
		if u := regexp.MustCompile(`(?m)^Uid:\s+(\d+)`).FindSubmatch(b); u == nil || string(u[1]) != uid {
			t.Errorf("pid %d runs as uid %s, want zfs-serve (%s)", pid, u, uid)
		}
		env, err := os.ReadFile(z.Path(fmt.Sprintf("/proc/%d/environ", pid)))
		if err != nil {
			t.Fatal(err)
		}
		hasNotify := strings.Contains("\x00"+string(env), "\x00NOTIFY_SOCKET=")
		if i == 0 && !hasNotify {
			t.Errorf("the supervisor has no NOTIFY_SOCKET")
		}
		for _, k := range systemdOnly {
			if i > 0 && strings.Contains("\x00"+string(env), "\x00"+k+"=") {
				t.Errorf("worker %d has %s", pid, k)
			}
		}
	}

	// zctl: root above; a member of the control group; not another user.
	z.Must("useradd", "--no-create-home", "--groups", "zfs-serve", "alice")
	r := z.Exec(time.Minute, "setpriv", "--reuid=alice", "--regid=alice", "--init-groups", "zctl", "status")
	if r.Code != 0 || !strings.Contains(r.Stdout, "serving") {
		t.Errorf("zctl status as a member of zfs-serve: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	r = z.Exec(time.Minute, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "zctl", "status")
	if r.Code == 0 || !strings.Contains(r.Stderr, "permission denied") {
		t.Errorf("zctl status as nobody: exit %d, want refused with permission denied\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
}

// serviceStart: with everything stopped, starting the service alone
// starts both sockets too.
func (z *zfsContainer) serviceStart(t *testing.T) {
	z.Must("systemctl", "stop", unitService, unitSocket, unitControl)
	for _, u := range []string{unitService, unitSocket, unitControl} {
		if s := z.Show(u, "ActiveState")["ActiveState"]; s != "inactive" {
			t.Fatalf("%s is %q after stop, want inactive", u, s)
		}
	}
	z.Must("systemctl", "start", unitService)
	for _, u := range []string{unitService, unitSocket, unitControl} {
		if s := z.Show(u, "ActiveState")["ActiveState"]; s != "active" {
			t.Errorf("%s is %q after systemctl start %s, want active", u, s, unitService)
		}
	}
	if st := z.status(t); st.State != ctl.StateServing {
		t.Errorf("state %s right after systemctl start (Type=notify), want serving", st.State)
	}
	z.fetch(t, "/big.bin", z.bigSHA)
}
