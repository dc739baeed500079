package human

import "testing"

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{"": "", "plain ü✓ 文件": "plain ü✓ 文件", "a\tb\x7fc\x00": "a?b?c?", "\u009b2J": "?2J", "x\u2028y": "x?y"} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}
