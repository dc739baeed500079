package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestZfetchPlantedLinks: symbolic links planted at the names zfetch
// writes beside its destination (in a folder others can write to) never
// lead it to write elsewhere. A link at the .part's name is refused with
// a clear error (exit 6, a local error) and left alone; one at the resume
// state's temporary name is replaced, and the download completes. The
// links' target keeps its bytes either way: before, zfetch wrote the
// download over the first target and truncated the second.
func TestZfetchPlantedLinks(t *testing.T) {
	d, sum := serveOneFile(t, 1<<20)
	victim := filepath.Join(t.TempDir(), "precious")
	const precious = "not to be overwritten\n"
	if err := os.WriteFile(victim, []byte(precious), 0o644); err != nil {
		t.Fatal(err)
	}
	untouched := func() {
		t.Helper()
		if b, err := os.ReadFile(victim); err != nil || string(b) != precious {
			t.Fatalf("the link's target was written: %q %v", b, err)
		}
	}
	for _, url := range []string{d.URL("/f.bin"), d.httpURL("/f.bin")} {
		dir := t.TempDir()
		dst := filepath.Join(dir, "f.bin")

		part := dst + ".part"
		if err := os.Symlink(victim, part); err != nil {
			t.Fatal(err)
		}
		r := Zfetch(t, "-q", "-o", dst, url)
		if r.Code != 6 || !strings.Contains(r.Stderr, "symbolic link") {
			t.Fatalf("%s, .part a link: exit %d, want 6 and a word on the link: %s", url, r.Code, r.Stderr)
		}
		untouched()
		mustKind(t, part, os.ModeSymlink)
		if _, err := os.Lstat(dst); !os.IsNotExist(err) {
			t.Fatalf("%s: the destination exists after a refusal: %v", url, err)
		}
		os.Remove(part)

		tmp := dst + ".part.state.tmp"
		if err := os.Symlink(victim, tmp); err != nil {
			t.Fatal(err)
		}
		r = Zfetch(t, "-q", "-o", dst, url)
		if r.Code != 0 {
			t.Fatalf("%s, state's temporary name a link: exit %d: %s", url, r.Code, r.Stderr)
		}
		untouched()
		if got := FileSHA256(t, dst); got != sum {
			t.Fatalf("%s: sha256 %s, want %s", url, got, sum)
		}
	}
}

// TestZfetchPlantedHardLink: a hard link planted at the .part's name (to
// a file of the user who runs zfetch, where the system lets others link
// it) is refused as a symbolic link is: before, zfetch emptied that file,
// wrote the download into it and renamed it into place.
func TestZfetchPlantedHardLink(t *testing.T) {
	d, _ := serveOneFile(t, 1<<20)
	dir := t.TempDir()
	victim := filepath.Join(dir, "precious")
	const precious = "not to be overwritten\n"
	if err := os.WriteFile(victim, []byte(precious), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "f.bin")
	if err := os.Link(victim, dst+".part"); err != nil {
		t.Skipf("link: %v", err)
	}
	for _, args := range [][]string{{"-q", "-o", dst, d.URL("/f.bin")}, {"-q", "-c", "-o", dst, d.httpURL("/f.bin")}} {
		r := Zfetch(t, args...)
		if r.Code != 6 || !strings.Contains(r.Stderr, "hard link") {
			t.Fatalf("%v: exit %d, want 6 and a word on the link: %s", args, r.Code, r.Stderr)
		}
		if b, err := os.ReadFile(victim); err != nil || string(b) != precious {
			t.Fatalf("%v: the linked file was written: %d bytes %v", args, len(b), err)
		}
	}
}

// TestZfetchTreePlantedLink: a symbolic link planted at a directory's name
// in the local tree (-r into a folder others can write to) is refused; it
// used to be followed, and the files below written wherever it led.
func TestZfetchTreePlantedLink(t *testing.T) {
	root := t.TempDir()
	WriteRandom(t, filepath.Join(root, "tree", "sub", "authorized_keys"), 100)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1})
	for _, url := range []string{d.URL("/tree/"), d.httpURL("/tree/")} {
		shared, outside := t.TempDir(), t.TempDir()
		if err := os.MkdirAll(filepath.Join(shared, "tree"), 0o755); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(shared, "tree", "sub")
		if err := os.Symlink(outside, link); err != nil {
			t.Fatal(err)
		}
		r := Zfetch(t, "-q", "-r", "-O", shared, url)
		if r.Code != 6 || !strings.Contains(r.Stderr, "symbolic link") {
			t.Errorf("%s: exit %d, want 6 and a word on the link: %s", url, r.Code, r.Stderr)
		}
		if names, _ := os.ReadDir(outside); len(names) != 0 {
			t.Errorf("%s: written where the link leads: %v", url, names)
		}
		mustKind(t, link, os.ModeSymlink)
	}
}
