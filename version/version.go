// Package version reports the build's version: set at link time by the
// Makefile and the Debian package (-X), else from the module's build info.
package version

import "runtime/debug"

// Version is overridden with -ldflags "-X github.com/zfs-serve/zfs-serve/version.Version=1.2.3".
var Version = ""

// String returns the version, "dev" when unknown.
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			return v
		}
	}
	return "dev"
}
