package httphead

import "testing"

func TestParse(t *testing.T) {
	h, err := Parse([]byte("HTTP/1.1 200 OK\r\nServer: nginx\r\ncontent-length: 4096\r\nConnection: close\r\n\r\n"))
	if err != nil || h.Status != 200 || h.ContentLength != 4096 || !h.Close {
		t.Fatalf("got %+v, %v", h, err)
	}
	h, err = Parse([]byte("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
	if err != nil || h.Status != 404 || h.ContentLength != 0 || h.Close {
		t.Fatalf("got %+v, %v", h, err)
	}
	for _, bad := range []string{
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\n",
		"SSH-2.0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}
