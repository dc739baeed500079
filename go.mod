module github.com/zfs-serve/zfs-serve

go 1.26.8

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/creack/pty v1.1.24
	github.com/mattn/go-runewidth v0.0.31
	github.com/pires/go-proxyproto v0.15.0 // only in proxyproto/fuzz_test.go, the reference of a differential fuzz
	golang.org/x/sys v0.50.0
	golang.org/x/term v0.48.0
)

require github.com/clipperhouse/uax29/v2 v2.2.0 // indirect
