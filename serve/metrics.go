package serve

import (
	"sync/atomic"

	"github.com/zfs-serve/zfs-serve/wire"
)

// Responses are counted by status class and protocol for the supervisor's
// metrics (docs/FLEET.md): one atomic add per response, no map, no lock.

// Classes counts responses by status class: 2xx, 3xx, 4xx, 5xx, in that
// order (ClassNames).
type Classes [numClasses]uint64

const numClasses = 4

// ClassNames label the entries of Classes.
var ClassNames = [numClasses]string{"2xx", "3xx", "4xx", "5xx"}

type classCounts [numClasses]atomic.Uint64

// add counts one response with HTTP status code; a code outside 200-599
// (none: the response never got a status) is not counted.
func (c *classCounts) add(code int) {
	if i := uint(code/100 - 2); i < uint(len(c)) {
		c[i].Add(1)
	}
}

func (c *classCounts) load() Classes {
	var out Classes
	for i := range c {
		out[i] = c[i].Load()
	}
	return out
}

// NativeStatusCode is the HTTP status that stands for a native status when
// responses are counted by class: the status the HTTP side answers for the
// same outcome (busy and draining are 503, an internal error 500, every
// refusal of the request 4xx).
func NativeStatusCode(st wire.Status) int {
	switch st {
	case wire.StatusOK:
		return 200
	case wire.StatusBadRequest, wire.StatusUnsupportedVersion:
		return 400
	case wire.StatusForbidden, wire.StatusNotRegular:
		return 403
	case wire.StatusNotFound, wire.StatusNotDirectory:
		return 404
	case wire.StatusRangeNotSatisfiable:
		return 416
	case wire.StatusBusy, wire.StatusDraining:
		return 503
	}
	return 500 // StatusInternal, and a status this server does not know
}
