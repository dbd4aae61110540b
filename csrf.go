package realtime

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// The cross-site request rule (PROTOCOL.md §1, Config.CSRFTrustedOrigins).
//
// A browser attaches cookies to a request a page of another site makes
// (a form POST, a fetch with credentials), so a request authenticated by a
// credential the browser attaches by itself (ambient: the token cookie, or
// Config.Identify without IdentifyByHeader) is refused with 403 when its
// method changes state and its origin is not allowed:
//
//  1. GET, HEAD and OPTIONS always pass; so does a request authenticated
//     by a header or query token (no page of another site can send one).
//  2. Sec-Fetch-Site, when present, is the browser's own word: same-origin
//     and none (the user's own action) pass; same-site, cross-site and
//     anything else pass only with an Origin listed in
//     CSRFTrustedOrigins.
//  3. Otherwise the Origin header decides: it passes when its host equals
//     the request's Host, or when it is listed; "null" and anything that is
//     not scheme://host[:port] are refused.
//  4. No Origin (and no Sec-Fetch-Site) is refused: every current browser
//     sends Origin on such requests, and the contract requires it. The
//     Referer is never consulted: a page can suppress it, and a request
//     without Origin is refused whatever its Referer says. A non-browser
//     client authenticates with the Authorization header instead.
//
// CORS plays no part: an origin in CORSAllowedOrigins is not trusted with
// cookies unless it is listed here too.

// originPolicy holds the trusted origins of the rule, normalised.
type originPolicy struct {
	trusted map[string]struct{}
}

// newOriginPolicy checks and normalises origins. Errors wrap
// ErrInvalidConfig.
func newOriginPolicy(origins []string) (*originPolicy, error) {
	op := &originPolicy{trusted: make(map[string]struct{}, len(origins))}
	for _, o := range origins {
		n, ok := parseOrigin(o)
		if !ok {
			return nil, fmt.Errorf("%w: CSRFTrustedOrigins: %q is not scheme://host[:port]", ErrInvalidConfig, o)
		}
		op.trusted[n.String()] = struct{}{}
	}
	return op, nil
}

// origin is a parsed Origin: lower-case scheme and host, the port only when
// it is not the scheme's default.
type origin struct {
	scheme, host string // host includes a non-default port
}

func (o origin) String() string { return o.scheme + "://" + o.host }

// parseOrigin parses an Origin header value or a configured origin:
// http or https, a host, an optional port, nothing else (no user, path,
// query or fragment; a single trailing "/" is tolerated for configured
// values). "null" and "*" are not origins.
func parseOrigin(s string) (origin, bool) {
	if len(s) > 2048 || strings.ContainsAny(s, " \t\r\n\\") {
		return origin{}, false
	}
	u, err := url.Parse(strings.TrimSuffix(s, "/"))
	if err != nil || u.Opaque != "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return origin{}, false
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return origin{}, false
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if host == "" || strings.HasSuffix(u.Host, ":") {
		return origin{}, false
	}
	if strings.Contains(host, ":") { // IPv6 literal
		host = "[" + host + "]"
	}
	if port != "" && !(scheme == "http" && port == "80") && !(scheme == "https" && port == "443") {
		host += ":" + port
	}
	return origin{scheme: scheme, host: host}, true
}

// safeMethod reports whether m never changes state (the rule's exemption).
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// check applies the rule to r; ambient reports whether r is authenticated
// by a credential the browser attaches by itself. It returns nil or an
// error wrapping ErrForbidden.
func (op *originPolicy) check(r *http.Request, ambient bool) error {
	if !ambient || safeMethod(r.Method) || op.allowed(r) {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrForbidden, errCrossSite)
}

// allowed is steps 2 to 4 of the rule.
func (op *originPolicy) allowed(r *http.Request) bool {
	raw := r.Header.Get("Origin")
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return true
	case "":
	default:
		return op.trustedOrigin(raw)
	}
	if raw == "" {
		return false
	}
	o, ok := parseOrigin(raw)
	if !ok {
		return false
	}
	if strings.EqualFold(o.host, requestHost(r)) {
		return true
	}
	_, ok = op.trusted[o.String()]
	return ok
}

// trustedOrigin reports whether the Origin value raw is listed.
func (op *originPolicy) trustedOrigin(raw string) bool {
	o, ok := parseOrigin(raw)
	if !ok {
		return false
	}
	_, ok = op.trusted[o.String()]
	return ok
}

// requestHost is r's Host as an origin's host: lower case, a default port
// of r's scheme dropped.
func requestHost(r *http.Request) string {
	h := strings.ToLower(r.Host)
	if r.TLS != nil {
		return strings.TrimSuffix(h, ":443")
	}
	return strings.TrimSuffix(h, ":80")
}
