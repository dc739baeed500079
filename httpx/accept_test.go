package httpx

import "testing"

func TestWantsJSON(t *testing.T) {
	tests := []struct {
		accept, query string
		want          bool
	}{
		{"", "", false},
		// The query.
		{"", "format=json", true},
		{"", "a=1&format=json&b", true},
		{"", "format=JSON", true},
		{"", "form%61t=js%6Fn", true},
		{"text/html", "format=json", true},
		{"", "format=html", false},
		{"", "format=json+", false},
		{"", "format=html&format=json", false},
		{"", "xformat=json", false},
		{"", "format", false},
		{"", "%zz=1&format=json", true},
		{"", "format=%zz&format=json", true},
		{"", "format=json;a=b", false},
		{"application/json", "format=html", true},
		// Accept.
		{"application/json", "", true},
		{"Application/JSON", "", true},
		{"application/json; charset=utf-8", "", true},
		{"application/*", "", true},
		{"*/*", "", false},
		{"text/html", "", false},
		{"application/json, text/html", "", false},
		{"text/html, application/json", "", false},
		{"application/json, */*", "", true},
		{"application/json, text/plain, */*", "", true}, // axios
		{"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "", false},
		{"application/json;q=0.9, text/html;q=0.8", "", true},
		{"application/json;q=0.8, text/html;q=0.9", "", false},
		{"application/json;q=0, */*", "", false},
		{"application/json;q=0", "", false},
		{"text/html;q=0, */*", "", true},
		{"text/html;q=0, application/json;q=0.001", "", true},
		{"text/*;q=0.5, application/*", "", true},
		{"text/*, application/*;q=0.5", "", false},
		{"*/*;q=0.1, application/json;q=0.2", "", true},
		{"application/json;Q=1.000", "", true},
		{"application/json ; q = 0.5 , text/html;q=0.4", "", true},
		{"application/json;q=1.5", "", false},
		{"application/json;q=0.0001", "", false},
		{"application/json;q=x", "", false},
		{"application/json;q=", "", false},
		{"application/json;q=1.001", "", false},
		{"application/json, application/json;q=0.2", "", true},
		{"application/json;q=0.2, application/json", "", true},
		{"application/json;q=0.5, application/*;q=1, text/html;q=0.6", "", false},
		{"json", "", false},
		{",,, ", "", false},
		// ASCII case only (RFC 9110 media types): U+017F (long s)
		// folds to "s" in Unicode.
		{"application/j\u017fon", "", false},
		{"application/j\u017fon, text/html;q=0.5", "", false},
		{"", "format=j%C5%BFon", false},
	}
	for _, tt := range tests {
		if got := WantsJSON(tt.accept, tt.query); got != tt.want {
			t.Errorf("WantsJSON(%q, %q) = %v, want %v", tt.accept, tt.query, got, tt.want)
		}
	}
}

func FuzzWantsJSON(f *testing.F) {
	f.Add("application/json;q=0.5, text/*;q=0.4", "a=b&format=json")
	f.Add("*/*", "format=%6a%73on")
	f.Fuzz(func(t *testing.T, accept, query string) {
		if WantsJSON(accept, query) != WantsJSON(accept+", */*;q=0", query) {
			t.Fatalf("WantsJSON(%q, %q) changed by */*;q=0", accept, query)
		}
		if !WantsJSON(accept, "format=json&"+query) {
			t.Fatalf("WantsJSON(%q, format=json&%q) = false", accept, query)
		}
	})
}

func TestFormatJSON(t *testing.T) {
	for _, tt := range []struct {
		query string
		want  bool
	}{
		{"format=json", true},
		{"format=JSON", true},
		{"x=1&format=json", true},
		{"format=json&format=html", true},
		{"format=html&format=json", false}, // the first one counts
		{"format=", false},
		{"", false},
		{"formats=json", false},
		{"%66ormat=json", true},
		// ASCII case only: U+017F (long s) folds to "s" in Unicode.
		{"format=j%C5%BFon", false},
		{"format=J%C5%BFON", false},
	} {
		if got := FormatJSON(tt.query); got != tt.want {
			t.Errorf("FormatJSON(%q) = %v, want %v", tt.query, got, tt.want)
		}
	}
}
