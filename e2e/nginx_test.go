package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Nginx is an nginx (Debian's nginx-light) on a loopback port, configured
// as bench/zbench configures it (its own prefix, pid file, temp paths and
// logs in a test directory), with an access log of the bytes each response
// sent.
type Nginx struct {
	t         testing.TB
	Root      string
	Addr      string
	Dir       string
	AccessLog string
	cmd       *exec.Cmd
	exited    chan struct{}
}

// NginxOpts configure StartNginx.
type NginxOpts struct {
	Root     string // default: a new directory
	CertFile string // with KeyFile: listen with TLS
	KeyFile  string
	Extra    string // more directives in the server block
}

// StartNginx starts nginx and waits until it accepts connections.
func StartNginx(t testing.TB, o NginxOpts) *Nginx {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, err := os.Stat("/usr/sbin/nginx"); err != nil {
			t.Skip("nginx not installed (scripts/deps installs nginx-light as root)")
		}
		bin = "/usr/sbin/nginx"
	}
	dir := shortTempDir(t)
	if o.Root == "" {
		o.Root = filepath.Join(dir, "root")
		if err := os.Mkdir(o.Root, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n := &Nginx{t: t, Root: o.Root, Dir: dir, AccessLog: filepath.Join(dir, "access.log"), exited: make(chan struct{})}
	for try := 0; ; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		n.Addr = l.Addr().String()
		l.Close()
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(n.conf(o)), 0o644); err != nil {
			t.Fatal(err)
		}
		logf, err := os.Create(filepath.Join(dir, "nginx.out"))
		if err != nil {
			t.Fatal(err)
		}
		n.cmd = exec.Command(bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
		n.cmd.Stdout, n.cmd.Stderr = logf, logf
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		logf.Close()
		n.exited = make(chan struct{})
		go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(n.cmd, n.exited)
		if n.waitReady() {
			break
		}
		n.Stop()
		if try == 3 {
			out, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx did not start:\n%s", out)
		}
	}
	t.Cleanup(n.Stop)
	return n
}

func (n *Nginx) conf(o NginxOpts) string {
	user := ""
	if os.Getuid() == 0 {
		user = "user root;\n" // the test directories are private to root
	}
	listen := n.Addr
	tls := ""
	if o.CertFile != "" {
		listen += " ssl"
		tls = fmt.Sprintf("ssl_certificate %s;\n        ssl_certificate_key %s;\n", o.CertFile, o.KeyFile)
	}
	return fmt.Sprintf(`# Written by e2e/nginx_test.go.
%sworker_processes 1;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 256; }
http {
    log_format bytes '$request_method $uri $status $bytes_sent $body_bytes_sent "$http_range" "$http_if_range"';
    access_log %[2]s/access.log bytes;
    sendfile on;
    default_type application/octet-stream;
    client_body_temp_path %[2]s/tmp-body;
    proxy_temp_path %[2]s/tmp-proxy;
    fastcgi_temp_path %[2]s/tmp-fastcgi;
    uwsgi_temp_path %[2]s/tmp-uwsgi;
    scgi_temp_path %[2]s/tmp-scgi;
    server {
        listen %[3]s;
        root %[4]s;
        autoindex on;
        autoindex_format json;
        %[5]s%[6]s
    }
}
`, user, n.Dir, listen, n.Root, tls, o.Extra)
}

func (n *Nginx) waitReady() bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-n.exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", n.Addr, time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// Stop stops nginx (fast shutdown: open connections are closed).
func (n *Nginx) Stop() {
	select {
	case <-n.exited:
		return
	default:
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
		n.cmd.Process.Kill()
		<-n.exited
	}
}

// URL is the http:// (or https://) URL of path.
func (n *Nginx) URL(scheme, path string) string { return scheme + "://" + n.Addr + escapePath(path) }

// accessLine is one line of the access log.
type accessLine struct {
	Method, URI    string
	Status         int
	Sent, BodySent int64
	Range, IfRange string
	raw            string
}

// Access reads the access log.
func (n *Nginx) Access() []accessLine {
	b, _ := os.ReadFile(n.AccessLog)
	var out []accessLine
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(l, " ", 6)
		if len(f) < 6 {
			continue
		}
		a := accessLine{Method: f[0], URI: f[1], raw: l}
		a.Status, _ = strconv.Atoi(f[2])
		a.Sent, _ = strconv.ParseInt(f[3], 10, 64)
		a.BodySent, _ = strconv.ParseInt(f[4], 10, 64)
		q := strings.Split(f[5], `"`)
		if len(q) >= 4 {
			a.Range, a.IfRange = q[1], q[3]
		}
		if a.Range == "-" {
			a.Range = ""
		}
		if a.IfRange == "-" {
			a.IfRange = ""
		}
		out = append(out, a)
	}
	return out
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// (PEM) into dir.
func selfSigned(t testing.TB, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "zfetch e2e"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}
