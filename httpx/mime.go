package httpx

import (
	"mime"
	"strings"
	"sync"
	"sync/atomic"
)

// defaultType is the media type of a file whose extension says nothing.
const defaultType = "application/octet-stream"

var (
	typeCache     sync.Map // extension -> media type
	typeCacheSize atomic.Int32
)

// maxTypeCache bounds typeCache: a tree of files with random extensions
// must not grow it without end. Past it, lookups go to package mime.
const maxTypeCache = 1024

// ContentType returns the media type of a file named name from its
// extension, with the system's table (package mime reads
// /etc/mime.types, which Debian's media-types package provides, over its
// own built-in table), and application/octet-stream when the extension is
// unknown or absent. As in package mime, text types say
// "; charset=utf-8". Results are cached per extension.
func ContentType(name string) string {
	ext := name[strings.LastIndexByte(name, '/')+1:]
	i := strings.LastIndexByte(ext, '.')
	if i < 0 {
		return defaultType
	}
	ext = ext[i:]
	if t, ok := typeCache.Load(ext); ok {
		return t.(string)
	}
	t := mime.TypeByExtension(ext)
	if t == "" {
		t = defaultType
	}
	if typeCacheSize.Load() < maxTypeCache {
		if _, loaded := typeCache.LoadOrStore(strings.Clone(ext), t); !loaded {
			typeCacheSize.Add(1)
		}
	}
	return t
}
