package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

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

// upgradeStartsSockets: an upgrade (or a reinstall after remove) starts
// every socket the administrator enabled, the metrics one included, as
// dh_installsystemd would; the first connection then starts the service
// with all of them.
func (z *zfsContainer) upgradeStartsSockets(t *testing.T) {
	z.Must("systemctl", "enable", unitMetrics)
	defer z.Exec(time.Minute, "systemctl", "disable", "--now", unitMetrics)
	z.Must("systemctl", "stop", unitService, unitSocket, unitControl, unitMetrics)
	if r := z.Exec(2*time.Minute, "dpkg", "-i", "/pay/"+filepath.Base(z.pkg.deb)); r.Code != 0 {
		t.Fatalf("dpkg -i again: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, u := range []string{unitSocket, unitControl, unitMetrics} {
		if s := z.Show(u, "ActiveState")["ActiveState"]; s != "active" {
			t.Errorf("%s (enabled) is %q after the upgrade, want active", u, s)
		}
	}
	z.fetch(t, "/small.bin", z.smallSHA)
	if st := z.status(t); len(st.Listeners) != 2 || st.Listeners[1].Name != "metrics" {
		t.Errorf("listeners %+v after the upgrade, want zfs and metrics", st.Listeners)
	}
}

// rollingRestart is docs/FLEET.md's "Rolling restart" under systemd: with
// the service stopped alone, the load balancer's next health check starts
// it again (the old binary, before the upgrade); with its sockets
// stopped, the box stays down until the package is installed, and the
// next health check then starts the new version.
func (z *zfsContainer) rollingRestart(t *testing.T) {
	needTool(t, "curl")
	z.Must("systemctl", "enable", unitMetrics)
	defer z.Exec(time.Minute, "systemctl", "disable", "--now", unitMetrics)
	z.Must("systemctl", "stop", unitService)
	z.Must("systemctl", "start", unitMetrics, unitService)
	healthz := func() Result {
		return runCmd(t, time.Minute, z.NetCommand("curl", "-sS", "-w", "%{http_code}", "--max-time", "10", "http://127.0.0.1:7071/healthz"))
	}
	z.Must("systemctl", "stop", unitService)
	healthz()
	if s := z.Show(unitService, "ActiveState")["ActiveState"]; s == "inactive" {
		t.Errorf("a health check after systemctl stop %s left it inactive: docs/FLEET.md's warning is moot", unitService)
	}
	z.Must("systemctl", "stop", unitSocket, unitControl, unitMetrics)
	if r := healthz(); r.Code == 0 {
		t.Errorf("with the sockets stopped, /healthz answered %q, want the connection refused", r.Stdout)
	}
	if s := z.Show(unitService, "ActiveState")["ActiveState"]; s != "inactive" {
		t.Errorf("%s is %q after a health check with its sockets stopped, want inactive", unitService, s)
	}
	if r := z.Exec(2*time.Minute, "dpkg", "-i", "/pay/"+filepath.Base(z.pkg.deb)); r.Code != 0 {
		t.Fatalf("dpkg -i: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if !waitFor(10*time.Second, func() bool { return healthz().Stdout == "ok\n200" }) {
		t.Errorf("/healthz after the upgrade: %q, want ok once the health check started the service", healthz().Stdout)
	}
}
