package human

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Printable makes s safe to print on one line of a terminal or a log:
// what is not a graphic character or a space becomes '?': C0 and C1
// controls and DEL (which could move the cursor, recolour the terminal or
// start a line), format characters such as bidirectional overrides, line
// and paragraph separators, private-use and unassigned code points, and
// invalid UTF-8. Text from a server (names, messages) goes through it
// before it reaches a person.
func Printable(s string) string {
	if strings.IndexFunc(s, unprintable) < 0 {
		return s
	}
	var b strings.Builder
	for _, c := range s {
		if unprintable(c) {
			c = '?'
		}
		b.WriteRune(c)
	}
	return b.String()
}

func unprintable(c rune) bool { return c == utf8.RuneError || !unicode.IsGraphic(c) }
