package fetch

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// Digests a server announces for a file. zfetch checks SHA-256 only, the
// one both RFC 9530 and zfs-serve's native protocol carry.

// sha256Len is the length of a SHA-256 digest.
const sha256Len = 32

// reprDigestSHA256 returns the sha-256 member of a Repr-Digest field (RFC
// 9530: a Structured Fields dictionary, "sha-256=:BASE64:, sha-512=..."),
// as lower-case hex, or "" if it has none that is well formed. Members'
// parameters are ignored, as RFC 9530 says.
func reprDigestSHA256(v string) string {
	for _, m := range splitMembers(v) {
		key, val, ok := strings.Cut(m, "=")
		if !ok || strings.TrimSpace(key) != "sha-256" {
			continue
		}
		val = strings.TrimSpace(val)
		if i := strings.IndexByte(val, ';'); i >= 0 {
			val = strings.TrimSpace(val[:i])
		}
		if len(val) < 2 || val[0] != ':' || val[len(val)-1] != ':' {
			return ""
		}
		return decodeSHA256(val[1 : len(val)-1])
	}
	return ""
}

// legacyDigestSHA256 returns the SHA-256 of a Digest field (RFC 3230,
// obsoleted by RFC 9530: "SHA-256=BASE64", the algorithm case-insensitive)
// as lower-case hex, or "".
func legacyDigestSHA256(v string) string {
	for _, m := range splitMembers(v) {
		key, val, ok := strings.Cut(m, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(key), "sha-256") {
			continue
		}
		return decodeSHA256(strings.Trim(strings.TrimSpace(val), `"`))
	}
	return ""
}

// splitMembers splits a comma-separated list (base64 has no commas).
func splitMembers(v string) []string {
	if len(v) > 4096 {
		return nil
	}
	parts := strings.Split(v, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

// decodeSHA256 decodes standard base64 (padded; unpadded accepted) of
// exactly 32 bytes to lower-case hex.
func decodeSHA256(b64 string) string {
	b, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil {
		b, err = base64.RawStdEncoding.Strict().DecodeString(b64)
	}
	if err != nil || len(b) != sha256Len {
		return ""
	}
	return hex.EncodeToString(b)
}

// headerSHA256 is the SHA-256 an HTTP response announces for the whole
// representation: Repr-Digest first, else the older Digest.
func headerSHA256(h header) string {
	if d := reprDigestSHA256(h.get("repr-digest")); d != "" {
		return d
	}
	return legacyDigestSHA256(h.get("digest"))
}
