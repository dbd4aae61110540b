package realtime

import (
	"errors"

	"github.com/golang-jwt/jwt/v5"
)

// Authentication failures by reason (AuthFailureStats): counted where a
// request is refused, never told to the client (PROTOCOL.md §1: a 401 never
// says which check failed).

// authReason is why a caller was refused.
type authReason uint8

const (
	authMissing authReason = iota
	authMalformed
	authSignature
	authExpired
	authClaims
	authScope
	authOrigin
	authOther
	numAuthReasons
)

var authNames = [numAuthReasons]string{"missing", "malformed", "signature", "expired", "claims", "scope", "origin", "other"}

// authFailed counts a refusal.
func (st *statsCounters) authFailed(why authReason) {
	if st != nil {
		st.auth[why].Add(1)
	}
}

// tokenFailure is why verifying raw failed with err.
func tokenFailure(raw string, err error) authReason {
	switch {
	case raw == "":
		return authMissing
	case errors.Is(err, jwt.ErrTokenExpired):
		return authExpired
	case errors.Is(err, jwt.ErrTokenMalformed):
		return authMalformed
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return authSignature
	case errors.Is(err, jwt.ErrTokenInvalidClaims), errors.Is(err, jwt.ErrTokenRequiredClaimMissing),
		errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued),
		errors.Is(err, jwt.ErrTokenInvalidIssuer), errors.Is(err, jwt.ErrTokenInvalidAudience),
		errors.Is(err, jwt.ErrTokenInvalidSubject), errors.Is(err, jwt.ErrTokenInvalidId):
		return authClaims
	case errors.Is(err, ErrUnauthorized):
		// A valid JWT the plugin refused: no sub claim, or an identity it
		// cannot take.
		return authClaims
	}
	return authOther
}
