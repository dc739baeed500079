package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// TestSystemdPackage is the Debian package under a real systemd: `make
// deb`, boot systemd 252 as PID 1 of a systemd-nspawn container, `dpkg -i`
// the package, then drive it with systemctl, journalctl, zctl and zfetch:
// socket activation on the first connection, status through systemd and
// zctl (root, the control group, refused for others), reload that returns
// once the new generation serves (in every zero-copy mode, under the
// unit's sandbox), stop that lets a paused download finish, the service
// pulling in its sockets, the journal, the watchdog restarting a frozen
// supervisor, upgrade, remove and purge.
//
// It needs root, systemd-nspawn, zstd and (the first time on a machine)
// debootstrap and the network; elsewhere it skips and says why.
func TestSystemdPackage(t *testing.T) {
	t.Parallel()
	skipUnlessNspawn(t)
	begin := time.Now()
	pkg := buildDeb(t)
	t.Logf("make deb: %s in %v", filepath.Base(pkg.deb), time.Since(begin).Round(10*time.Millisecond))
	c := bootContainer(t, filepath.Dir(pkg.deb)+":/pay")
	z := &zfsContainer{container: c, pkg: pkg, out: shortTempDir(t)}

	steps := []struct {
		name string
		f    func(*testing.T)
	}{
		{"install", z.install},
		{"socket activation", z.socketActivation},
		{"status and permissions", z.statusAndPermissions},
		{"digests in the cache directory", z.digests},
		{"reload", z.reload},
		{"stop with a download in flight", z.stopInFlight},
		{"service start pulls in its sockets", z.serviceStart},
		{"metrics socket", z.metricsSocket},
		{"access log in the journal", z.accessLogJournal},
		{"access log file", z.accessLogFile},
		{"journal", z.journal},
		{"watchdog", z.watchdog},
		{"upgrade", z.upgrade},
		{"remove and purge", z.purge},
	}
	// Each step starts from where the previous one left the system.
	for i, s := range steps {
		t0 := time.Now()
		if i > 0 {
			// The steps start the service more often than systemd's
			// default start limit allows (5 in 10s); not under test.
			z.Must("systemctl", "reset-failed", unitService)
		}
		ok := t.Run(s.name, func(t *testing.T) { z.container.t = t; s.f(t) })
		z.container.t = t
		t.Logf("%s: %v", s.name, time.Since(t0).Round(10*time.Millisecond))
		if !ok {
			return
		}
	}
	t.Logf("total (without power-off): %v", time.Since(begin).Round(10*time.Millisecond))
}

// builtPackage is the .deb under test and what went into it.
type builtPackage struct {
	deb     string
	version string
	zfetch  string // the packaged zfetch, run on the host side
}

// buildDeb runs `make deb` into a temporary directory.
func buildDeb(t *testing.T) builtPackage {
	t.Helper()
	v := runCmd(t, time.Minute, exec.Command("make", "-s", "-C", "..", "version"))
	version := strings.TrimSpace(v.Stdout)
	if v.Code != 0 || version == "" {
		t.Fatalf("make version: exit %d: %s", v.Code, v.Stderr)
	}
	dist := t.TempDir()
	r := runCmd(t, 10*time.Minute, exec.Command("make", "-C", "..", "deb", "DIST="+dist, "VERSION="+version))
	if r.Code != 0 {
		t.Fatalf("make deb: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	debs, _ := filepath.Glob(filepath.Join(dist, "zfs-serve_"+version+"_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v in %s, want one zfs-serve_%s_ARCH.deb\n%s", debs, dist, version, r.Stdout)
	}
	zf, _ := filepath.Glob(filepath.Join(dist, "build", "*", "zfetch"))
	if len(zf) == 0 {
		t.Fatalf("no zfetch under %s/build", dist)
	}
	return builtPackage{deb: debs[0], version: version, zfetch: zf[0]}
}

// zfsContainer is the container with the package, and the test's steps.
type zfsContainer struct {
	*container
	pkg      builtPackage
	out      string // host directory for downloads
	bigSHA   string
	smallSHA string
}

const (
	unitService = "zfs-serve.service"
	unitSocket  = "zfs-serve.socket"
	unitControl = "zfs-serve-control.socket"
	confPath    = "/etc/zfs-serve/zfs-serve.toml"
	servedDir   = "/srv/zfs-serve"
	bigSize     = 48 << 20 // more than the socket buffers hold: a paused client stops the send
)

func (z *zfsContainer) install(t *testing.T) {
	deb := "/pay/" + filepath.Base(z.pkg.deb)
	if r := z.Exec(2*time.Minute, "dpkg", "-i", deb); r.Code != 0 {
		t.Fatalf("dpkg -i: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := strings.TrimSpace(z.Must("zfs-serve", "--version")); got != "zfs-serve "+z.pkg.version {
		t.Errorf("zfs-serve --version = %q, want the stamped %q", got, z.pkg.version)
	}
	z.Must("getent", "passwd", "zfs-serve")
	z.Must("getent", "group", "zfs-serve")
	if st, err := os.Stat(z.Path(servedDir)); err != nil || !st.IsDir() {
		t.Errorf("%s: %v, want a directory made by postinst", servedDir, err)
	}
	conffiles := z.Must("dpkg-query", "-W", "-f=${Conffiles}", "zfs-serve")
	for _, f := range []string{confPath, "/etc/logrotate.d/zfs-serve"} {
		if !strings.Contains(conffiles, f) {
			t.Errorf("%s is not a conffile: %q", f, conffiles)
		}
	}
	if b, err := os.ReadFile(z.Path(confPath)); err != nil || !strings.Contains(string(b), `control_group = "zfs-serve"`) {
		t.Errorf("%s lacks control_group = \"zfs-serve\" (err %v)", confPath, err)
	}
	for _, f := range []string{"/usr/bin/zfs-serve", "/usr/bin/zctl", "/usr/bin/zfetch", "/usr/share/man/man8/zfs-serve.8.gz",
		"/usr/share/man/man8/zctl.8.gz", "/usr/share/man/man1/zfetch.1.gz", "/usr/share/doc/zfs-serve/copyright"} {
		if _, err := os.Stat(z.Path(f)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	// Every unit passes verify with the package's binaries in place
	// (--man=no: the minimal image has no man). Any message fails.
	r := z.Exec(time.Minute, "systemd-analyze", "verify", "--man=no", unitService, unitSocket, unitControl, unitMetrics)
	if r.Code != 0 || r.Stdout != "" || r.Stderr != "" {
		t.Errorf("systemd-analyze verify: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	// postinst enabled and started the sockets; the service waits for a
	// connection.
	for _, u := range []string{unitSocket, unitControl} {
		if s := strings.TrimSpace(z.Exec(time.Minute, "systemctl", "is-enabled", u).Stdout); s != "enabled" {
			t.Errorf("%s is %q after install, want enabled", u, s)
		}
		if s := z.Show(u, "ActiveState")["ActiveState"]; s != "active" {
			t.Errorf("%s is %q after install, want active", u, s)
		}
	}
	if s := z.Show(unitService, "ActiveState")["ActiveState"]; s != "inactive" {
		t.Errorf("%s is %q after install, want inactive until the first connection", unitService, s)
	}
	z.bigSHA = WriteRandom(t, z.Path(servedDir+"/big.bin"), bigSize)
	z.smallSHA = WriteRandom(t, z.Path(servedDir+"/small.bin"), 1<<20+3)
}

// fetch downloads path with the packaged zfetch from the host, in the
// container's network namespace, and checks it byte for byte.
func (z *zfsContainer) fetch(t *testing.T, path, want string) {
	t.Helper()
	out := filepath.Join(z.out, "dl.bin")
	os.Remove(out)
	r := runCmd(t, 2*time.Minute, z.NetCommand(z.pkg.zfetch, "-q", "-o", out, "zfs://127.0.0.1:7070"+path))
	if r.Code != 0 {
		t.Fatalf("zfetch %s: exit %d: %s", path, r.Code, r.Stderr)
	}
	if got := FileSHA256(t, out); got != want {
		t.Fatalf("zfetch %s: sha256 %s, want %s", path, got, want)
	}
}

// status is `zctl status --json`, as root inside the container.
func (z *zfsContainer) status(t *testing.T) *ctl.Status {
	t.Helper()
	var st ctl.Status
	if err := json.Unmarshal([]byte(z.Must("zctl", "status", "--json")), &st); err != nil {
		t.Fatalf("zctl status --json: %v", err)
	}
	return &st
}

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

var zeroCopyRE = regexp.MustCompile(`(?m)^zero_copy = .*$`)

// reload switches the zero-copy mode through every value with systemctl
// reload: each returns with the new generation already serving, and each
// mode sends byte-exact under the unit's sandbox (seccomp, no network,
// read-only system).
func (z *zfsContainer) reload(t *testing.T) {
	conf, err := os.ReadFile(z.Path(confPath))
	if err != nil {
		t.Fatal(err)
	}
	if !zeroCopyRE.Match(conf) {
		t.Fatalf("%s has no zero_copy line", confPath)
	}
	defer os.WriteFile(z.Path(confPath), conf, 0o644)
	for _, mode := range []string{"splice", "mmap", "copy", "sendfile"} {
		before := z.status(t).Generation
		if err := os.WriteFile(z.Path(confPath), zeroCopyRE.ReplaceAll(conf, []byte(`zero_copy = "`+mode+`"`)), 0o644); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		z.Must("systemctl", "reload", unitService)
		took := time.Since(t0)
		// No polling: when systemctl reload returns, the new generation serves.
		st := z.status(t)
		if st.Generation != before+1 || st.State != ctl.StateServing || st.ZeroCopy != mode || !allReady(st, st.Generation, len(currentWorkers(st))) || len(currentWorkers(st)) == 0 {
			t.Fatalf("right after systemctl reload (%v): generation %d (was %d), state %s, zero_copy %s, workers %+v",
				took, st.Generation, before, st.State, st.ZeroCopy, st.Workers)
		}
		z.fetch(t, "/big.bin", z.bigSHA)
	}
	// An invalid configuration: reload fails, the service keeps serving.
	before := z.status(t).Generation
	if err := os.WriteFile(z.Path(confPath), append(append([]byte(nil), conf...), "no_such_key = 1\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := z.Exec(time.Minute, "systemctl", "reload", unitService); r.Code == 0 {
		t.Errorf("systemctl reload with an unknown key succeeded")
	}
	if st := z.status(t); st.Generation != before || st.State != ctl.StateServing || !strings.HasPrefix(st.LastReload, "failed") {
		t.Errorf("after a failed reload: generation %d (was %d), state %s, last reload %q", st.Generation, before, st.State, st.LastReload)
	}
	if s := z.Show(unitService, "ActiveState")["ActiveState"]; s != "active" {
		t.Errorf("%s is %q after a failed reload, want active", unitService, s)
	}
	z.fetch(t, "/small.bin", z.smallSHA)
}

func currentWorkers(st *ctl.Status) []ctl.Worker {
	var ws []ctl.Worker
	for _, w := range st.Workers {
		if w.Generation == st.Generation {
			ws = append(ws, w)
		}
	}
	return ws
}

// stopInFlight: a client paused mid-file (SIGSTOP) while systemctl stop
// runs; the service drains, the download completes byte-exact once the
// client goes on, then the service stops, and the next connection starts
// it again.
func (z *zfsContainer) stopInFlight(t *testing.T) {
	oldPID := z.Show(unitService, "MainPID")["MainPID"]
	// One connection (-x 1): the 48 MiB response cannot fit in the socket
	// buffers, so while the client is stopped the server's send is too.
	cl := z.NetCommand(z.pkg.zfetch, "-q", "-x", "1", "-o", "-", "zfs://127.0.0.1:7070/big.bin")
	stdout, err := cl.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var clErr strings.Builder
	cl.Stderr = &clErr
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if stopped {
			cl.Process.Signal(syscall.SIGCONT)
		}
		cl.Process.Kill()
		cl.Wait()
	}()
	h := sha256.New()
	if _, err := io.CopyN(h, stdout, 1<<20); err != nil {
		t.Fatalf("first MiB: %v (%s)", err, clErr.String())
	}
	if err := cl.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped = true
	// Mid-file: the server has a transfer of big.bin in flight, not done.
	var tr ctl.Transfer
	if !waitFor(10*time.Second, func() bool {
		for _, x := range z.status(t).Transfers {
			if x.Path == "/big.bin" && x.Sent < x.Total {
				tr = x
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no transfer of /big.bin in flight")
	}

	stop := z.Command("systemctl", "stop", unitService)
	var stopOut strings.Builder
	stop.Stdout, stop.Stderr = &stopOut, &stopOut
	stop.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := stop.Start(); err != nil {
		t.Fatal(err)
	}
	stopDone := make(chan struct{})
	var stopErr error
	go func() { stopErr = stop.Wait(); close(stopDone) }()
	defer func() {
		select {
		case <-stopDone:
		default:
			syscall.Kill(-stop.Process.Pid, syscall.SIGKILL)
			<-stopDone
		}
	}()
	defer func() {
		if t.Failed() {
			t.Logf("journal:\n%s", tail(z.Exec(time.Minute, "journalctl", "-u", unitService, "--no-pager", "-o", "short-precise").Stdout, 40))
		}
	}()
	z.WaitShow(10*time.Second, "deactivating", unitService, func(p map[string]string) bool { return p["ActiveState"] == "deactivating" }, "ActiveState")
	select {
	case <-stopDone:
		t.Fatalf("systemctl stop returned (%v) while a download was in flight (%d of %d bytes sent)", stopErr, tr.Sent, tr.Total)
	default:
	}
	st := z.status(t)
	paused := false
	for _, x := range st.Transfers {
		paused = paused || (x.Path == "/big.bin" && x.Sent < x.Total)
	}
	if st.State != ctl.StateDraining || !paused {
		t.Errorf("while stopping: state %s, transfers %+v; want draining with big.bin part sent", st.State, st.Transfers)
	}

	if err := cl.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	n, err := io.Copy(h, stdout)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Wait(); err != nil {
		t.Fatalf("zfetch: %v (%s)", err, clErr.String())
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != z.bigSHA || n+1<<20 != bigSize {
		t.Fatalf("download across the stop: %d bytes, sha256 %s; want %d bytes, %s", n+1<<20, got, bigSize, z.bigSHA)
	}
	select {
	case <-stopDone:
		if stopErr != nil {
			t.Fatalf("systemctl stop: %v\n%s", stopErr, stopOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("systemctl stop still running 30s after the download ended")
	}
	// zfetch checks the file's identity once more after its last byte
	// (docs/ZFETCH.md), on a new connection: when that comes after the
	// old supervisor exited, socket activation starts a new one, as for
	// any client. Either way the stopped one must have ended cleanly.
	p := z.Show(unitService, "ActiveState", "Result", "ExecMainStatus", "MainPID")
	switch {
	case p["ActiveState"] == "inactive":
		if p["Result"] != "success" || p["ExecMainStatus"] != "0" {
			t.Errorf("after stop: %v, want inactive, success, exit status 0", p)
		}
	case p["MainPID"] == oldPID || p["MainPID"] == "0":
		t.Errorf("after stop: %v, want inactive (or re-activated by a client: a new MainPID, not %s)", p, oldPID)
	default:
		j := z.Exec(time.Minute, "journalctl", "-u", unitService, "--no-pager", "-o", "cat").Stdout
		if !strings.Contains(j, "zfs-serve exited cleanly: every transfer finished") || !strings.Contains(j, "Deactivated successfully") {
			t.Errorf("re-activated after the stop, but the stopped supervisor did not end cleanly:\n%s", tail(j, 20))
		}
	}
	if s := z.Show(unitSocket, "ActiveState")["ActiveState"]; s != "active" {
		t.Errorf("%s is %q after the service stopped, want active (listening)", unitSocket, s)
	}
	// The next connection re-activates it.
	z.fetch(t, "/small.bin", z.smallSHA)
	if pid := z.Show(unitService, "MainPID")["MainPID"]; pid == "0" || pid == oldPID {
		t.Errorf("MainPID %s after re-activation (was %s), want a new supervisor", pid, oldPID)
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

func (z *zfsContainer) journal(t *testing.T) {
	j := z.Must("journalctl", "-u", unitService, "--no-pager", "-o", "cat")
	for _, w := range []string{
		`msg="zfs-serve starting" proc=supervisor version=` + z.pkg.version,
		`msg="listening (socket-activated)" proc=supervisor name=zfs addr=127.0.0.1:7070`,
		`msg="control socket (socket-activated)" proc=supervisor path=/run/zfs-serve/control.sock`,
		`msg="worker started" proc=supervisor`,
		`msg="generation 1 serving with`,
		`msg="reloading: starting a new generation"`,
		`msg="draining: no new connections; waiting for transfers in flight" proc=supervisor why=SIGTERM in_flight=1`,
		`msg="zfs-serve exited cleanly: every transfer finished"`,
	} {
		if !strings.Contains(j, w) {
			t.Errorf("journalctl -u %s lacks %s", unitService, w)
		}
	}
	// The unit's seccomp filter lets the workers ask cachestat(2) (the
	// kernel has it: the host's, 6.5 or later, or the test is moot).
	if strings.Contains(j, "cachestat(2) is forbidden") {
		t.Errorf("journalctl -u %s: the unit's SystemCallFilter refuses cachestat(2)", unitService)
	}
	// ... and the supervisor sched_setattr(2) (supervisor_sched_batch).
	if strings.Contains(j, "could not set the supervisor's scheduling policy") {
		t.Errorf("journalctl -u %s: the unit's SystemCallFilter refuses sched_setattr(2)", unitService)
	}
	if t.Failed() {
		t.Logf("journal:\n%s", tail(j, 60))
	}
}

// watchdog: with WatchdogSec= from a drop-in the supervisor's loop pings
// systemd, a reload that cannot read its configuration included
// (hungReload); frozen with SIGSTOP, it is restarted.
func (z *zfsContainer) watchdog(t *testing.T) {
	dropin := "/etc/systemd/system/" + unitService + ".d"
	if err := os.MkdirAll(z.Path(dropin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(z.Path(dropin+"/watchdog.conf"), []byte("[Service]\nWatchdogSec=2s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.RemoveAll(z.Path(dropin))
		z.Exec(time.Minute, "systemctl", "daemon-reload")
	}()
	z.Must("systemctl", "daemon-reload")
	z.Must("systemctl", "restart", unitService)
	p := z.Show(unitService, "MainPID", "NRestarts", "WatchdogUSec", "WatchdogTimestampMonotonic")
	if p["WatchdogUSec"] != "2s" {
		t.Fatalf("WatchdogUSec=%s, want 2s from the drop-in", p["WatchdogUSec"])
	}
	// The pings arrive: the watchdog timestamp moves, twice.
	ts := p["WatchdogTimestampMonotonic"]
	for range 2 {
		ts = z.WaitShow(5*time.Second, "a WATCHDOG=1", unitService, func(q map[string]string) bool {
			return q["WatchdogTimestampMonotonic"] != ts
		}, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
	}
	restarts, _ := strconv.Atoi(p["NRestarts"])
	ts = z.hungReload(t, ts, p["MainPID"], restarts)
	z.Must("kill", "-STOP", p["MainPID"])
	q := z.WaitShow(30*time.Second, "a restart by the watchdog", unitService, func(q map[string]string) bool {
		n, _ := strconv.Atoi(q["NRestarts"])
		return q["ActiveState"] == "active" && q["MainPID"] != "0" && q["MainPID"] != p["MainPID"] && n > restarts
	}, "MainPID", "NRestarts", "ActiveState")
	t.Logf("watchdog: MainPID %s -> %s, NRestarts %d -> %s", p["MainPID"], q["MainPID"], restarts, q["NRestarts"])
	if j := z.Must("journalctl", "-u", unitService, "--no-pager", "-o", "cat"); !strings.Contains(j, "Watchdog timeout") {
		t.Errorf("the journal does not say the watchdog fired")
	}
	z.fetch(t, "/small.bin", z.smallSHA)
}

// upgrade: installing the package again (as an upgrade does) restarts a
// running service with the new binary; it keeps serving.
func (z *zfsContainer) upgrade(t *testing.T) {
	old := z.Show(unitService, "MainPID", "ActiveState")
	if old["ActiveState"] != "active" {
		t.Fatalf("%s is %s before the upgrade, want active", unitService, old["ActiveState"])
	}
	if r := z.Exec(2*time.Minute, "dpkg", "-i", "/pay/"+filepath.Base(z.pkg.deb)); r.Code != 0 {
		t.Fatalf("dpkg -i again: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	p := z.Show(unitService, "MainPID", "ActiveState")
	if p["ActiveState"] != "active" || p["MainPID"] == old["MainPID"] {
		t.Errorf("after the upgrade: %v (was %v), want active with a new MainPID", p, old)
	}
	z.fetch(t, "/small.bin", z.smallSHA)
}

// purge: remove stops everything and keeps the configuration; purge
// removes the configuration, the user and the group, and keeps the
// administrator's files in the served directory.
func (z *zfsContainer) purge(t *testing.T) {
	if r := z.Exec(2*time.Minute, "dpkg", "-r", "zfs-serve"); r.Code != 0 {
		t.Fatalf("dpkg -r: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, u := range []string{unitService, unitSocket, unitControl} {
		if s := strings.TrimSpace(z.Exec(time.Minute, "systemctl", "is-active", u).Stdout); s == "active" {
			t.Errorf("%s still active after dpkg -r", u)
		}
	}
	if _, err := os.Stat(z.Path(confPath)); err != nil {
		t.Errorf("dpkg -r removed the conffile: %v", err)
	}
	r := runCmd(t, time.Minute, z.NetCommand(z.pkg.zfetch, "-q", "--retries", "1", "-o", filepath.Join(z.out, "gone.bin"), "zfs://127.0.0.1:7070/small.bin"))
	if r.Code == 0 {
		t.Errorf("zfetch still works after dpkg -r")
	}
	if r := z.Exec(2*time.Minute, "dpkg", "--purge", "zfs-serve"); r.Code != 0 {
		t.Fatalf("dpkg --purge: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if _, err := os.Stat(z.Path("/etc/zfs-serve")); !os.IsNotExist(err) {
		t.Errorf("/etc/zfs-serve after purge: %v, want gone", err)
	}
	for _, dir := range []string{"/var/cache/zfs-serve", "/var/log/zfs-serve", "/etc/logrotate.d/zfs-serve"} {
		if _, err := os.Stat(z.Path(dir)); !os.IsNotExist(err) {
			t.Errorf("%s after purge: %v, want gone", dir, err)
		}
	}
	for _, db := range []string{"passwd", "group"} {
		if r := z.Exec(time.Minute, "getent", db, "zfs-serve"); r.Code == 0 {
			t.Errorf("zfs-serve still in %s after purge: %s", db, r.Stdout)
		}
	}
	if _, err := os.Stat(z.Path(servedDir + "/big.bin")); err != nil {
		t.Errorf("purge removed the administrator's files in %s: %v", servedDir, err)
	}
	left, _ := filepath.Glob(z.Path("/etc/systemd/system/*/zfs-serve*"))
	if masks, _ := filepath.Glob(z.Path("/etc/systemd/system/zfs-serve*")); len(masks)+len(left) > 0 {
		t.Errorf("unit links left after purge: %v %v", masks, left)
	}
}

// digests: under the unit's sandbox (ProtectSystem=strict, a read-only
// served directory) the workers keep digests in CacheDirectory=, and a
// restarted service loads them from there instead of hashing again.
func (z *zfsContainer) digests(t *testing.T) {
	if out := z.Must("zctl", "digest", "/small.bin"); out != z.smallSHA+"  /small.bin\n" {
		t.Fatalf("zctl digest: %q, want %q", out, z.smallSHA+"  /small.bin\n")
	}
	dir := "/var/cache/zfs-serve/sha256"
	st, err := os.Stat(z.Path(dir))
	if err != nil {
		t.Fatalf("no digest cache: %v", err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("%s: mode %v, want 0700", dir, st.Mode())
	}
	uid := strings.Split(strings.TrimSpace(z.Must("getent", "passwd", "zfs-serve")), ":")[2]
	if owner := strings.TrimSpace(z.Must("stat", "-c", "%u", dir)); owner != uid {
		t.Errorf("%s is owned by uid %s, want zfs-serve (%s)", dir, owner, uid)
	}
	// small.bin's entry, named by device and inode (docs/DIGESTS.md).
	// Not a count: big.bin, fetched by earlier steps, is hashed in the
	// background too, not before 2 s after its last change and in a
	// worker that may have been stopped since: whether its entry is
	// there yet depends on the container's speed.
	var fst syscall.Stat_t
	if err := syscall.Stat(z.Path(servedDir+"/small.bin"), &fst); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(z.Path(fmt.Sprintf("%s/%x-%x.sha256", dir, fst.Dev, fst.Ino))); err != nil {
		ents, _ := filepath.Glob(z.Path(dir + "/*.sha256"))
		t.Fatalf("no entry for small.bin in %s (%v); it holds %v", dir, err, ents)
	}
	z.Must("systemctl", "restart", unitService)
	if out := z.Must("zctl", "digest", "/small.bin"); out != z.smallSHA+"  /small.bin\n" {
		t.Fatalf("zctl digest after the restart: %q", out)
	}
	if tot := z.status(t).Totals; tot.DigestsHashed != 0 || tot.DigestsLoaded != 1 {
		t.Errorf("after the restart: digests_hashed %d, digests_loaded %d; want 0 and 1", tot.DigestsHashed, tot.DigestsLoaded)
	}
}
