package realtime

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// Claim mapping (Config.JWTUserClaim, Config.JWTTenantClaim): which claims
// of a verified JWT give the identity's user and tenant.

// maxClaimDepth bounds the segments of a nested claim path.
const maxClaimDepth = 8

// claimPath names one claim: the whole name as a top-level claim first
// (namespaced claims such as "https://example.com/tenant" contain dots),
// else, when the name has dots, the path of its dot-separated segments
// through nested objects ("org.id" reads {"org":{"id":…}}).
type claimPath struct {
	name string
	path []string // the nested form; nil when there is none
}

// parseClaimPath parses a claim name of the configuration. Only an empty
// name is refused (false); a name with an empty segment ("a..b") or more
// than maxClaimDepth segments has no nested form.
func parseClaimPath(name string) (claimPath, bool) {
	if name == "" {
		return claimPath{}, false
	}
	cp := claimPath{name: name}
	if !strings.Contains(name, ".") {
		return cp, true
	}
	segs := strings.Split(name, ".")
	if len(segs) > maxClaimDepth {
		return cp, true
	}
	for _, s := range segs {
		if s == "" {
			return cp, true
		}
	}
	cp.path = segs
	return cp, true
}

// lookup returns the claim's value in claims (JSON decoded into maps);
// false when it is absent or null.
func (cp claimPath) lookup(claims map[string]any) (any, bool) {
	if v, ok := claims[cp.name]; ok {
		return v, v != nil
	}
	if cp.path == nil {
		return nil, false
	}
	var cur any = claims
	for _, seg := range cp.path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[seg]; !ok {
			return nil, false
		}
	}
	return cur, cur != nil
}

// claimString is the text of a user or tenant claim: a string as it is, an
// integer (json.Number, or a float64 without a fraction) in decimal;
// errClaimType for anything else.
func claimString(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case json.Number:
		s := string(x)
		digits := strings.TrimPrefix(s, "-")
		if digits == "" || strings.Trim(digits, "0123456789") != "" {
			return "", errClaimType // a fraction, an exponent, not a number
		}
		return s, nil
	case float64:
		if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
			return "", errClaimType
		}
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	}
	return "", errClaimType
}
