package httpx

import (
	"net/url"
	"strings"
)

// FormatJSON reports whether the raw query string asks for JSON by name:
// its first format parameter is "json", in any ASCII case. Unlike an
// Accept field, that names a resource of its own, a folder's JSON
// listing, which a folder's index file does not stand in for.
func FormatJSON(rawQuery string) bool {
	v, ok := rawQueryValue(rawQuery, "format")
	return ok && equalLower(v, "json")
}

// WantsJSON reports whether a directory listing is to be sent as JSON
// rather than HTML: when the raw query string has a format parameter
// (its first one) equal to "json", or when the Accept field value prefers
// application/json to text/html.
//
// Each of the two media types takes the quality value of the most specific
// media range that matches it ("application/json", then "application/*",
// then "*/*"; the highest q among ranges of equal specificity), parameters
// other than q being ignored. JSON is preferred when its quality is higher,
// or equal and nonzero but from a more specific range: "application/json,
// */*" prefers JSON, while "*/*" alone, no Accept at all, or
// "application/json, text/html" prefer HTML, the listing for people.
func WantsJSON(accept, rawQuery string) bool {
	if FormatJSON(rawQuery) {
		return true
	}
	jq, js, hq, hs := 0, 0, 0, 0
	for elem := range strings.SplitSeq(accept, ",") {
		mr, params, _ := strings.Cut(elem, ";")
		typ, sub, ok := strings.Cut(stripOWS(mr), "/")
		if !ok {
			continue
		}
		q, ok := acceptQuality(params)
		if !ok {
			continue
		}
		jq, js = acceptRank(jq, js, q, acceptMatch(typ, sub, "application", "json"))
		hq, hs = acceptRank(hq, hs, q, acceptMatch(typ, sub, "text", "html"))
	}
	return jq > hq || jq == hq && jq > 0 && js > hs
}

// acceptMatch returns how specifically the media range typ/sub matches the
// media type wantTyp/wantSub, which are lower case: 3 exactly, 2 by
// type/*, 1 by */*, 0 not. Case is ASCII's (strings.EqualFold would take
// U+017F, a long s, for "s").
func acceptMatch(typ, sub, wantTyp, wantSub string) int {
	switch {
	case typ == "*" && sub == "*":
		return 1
	case !equalLower(typ, wantTyp):
		return 0
	case sub == "*":
		return 2
	case equalLower(sub, wantSub):
		return 3
	}
	return 0
}

// acceptRank folds a matching media range of quality q and specificity
// spec into the best so far, (bestQ, bestSpec).
func acceptRank(bestQ, bestSpec, q, spec int) (int, int) {
	switch {
	case spec == 0 || spec < bestSpec:
		return bestQ, bestSpec
	case spec > bestSpec:
		return q, spec
	}
	return max(bestQ, q), spec
}

// acceptQuality finds the q parameter among a media range's parameters
// (";"-separated) and returns it in thousandths, 1000 when absent. ok is
// false when q is not a valid qvalue: 0 or 1 with up to three decimals,
// at most 1 (RFC 9110 section 12.4.2).
func acceptQuality(params string) (q int, ok bool) {
	for p := range strings.SplitSeq(params, ";") {
		name, v, _ := strings.Cut(stripOWS(p), "=")
		if !equalLower(stripOWS(name), "q") {
			continue
		}
		v = stripOWS(v)
		if v == "" || v[0] != '0' && v[0] != '1' {
			return 0, false
		}
		q = int(v[0]-'0') * 1000
		if len(v) > 1 {
			if v[1] != '.' || len(v) > 5 {
				return 0, false
			}
			scale := 100
			for _, c := range []byte(v[2:]) {
				if c < '0' || c > '9' {
					return 0, false
				}
				q += int(c-'0') * scale
				scale /= 10
			}
		}
		return q, q <= 1000
	}
	return 1000, true
}

// rawQueryValue returns the first value of the parameter key in the raw query
// string q ("a=1&format=json"), decoding both as form values do ("+" is a
// space, %XX a byte). A parameter whose name or value is badly escaped is
// skipped; "format" without "=" has the value "".
func rawQueryValue(q, key string) (string, bool) {
	for pair := range strings.SplitSeq(q, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if strings.ContainsAny(k, "%+") {
			var err error
			if k, err = url.QueryUnescape(k); err != nil {
				continue
			}
		}
		if k != key {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			var err error
			if v, err = url.QueryUnescape(v); err != nil {
				continue
			}
		}
		return v, true
	}
	return "", false
}
