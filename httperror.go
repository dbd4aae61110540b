package realtime

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"
)

// errorBody is the JSON error shape of the wire contract.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// statusOf maps an error to its HTTP status, contract code and public message.
// Messages never say which token check failed.
func statusOf(err error) (int, string, string) {
	switch {
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized, "unauthorized", "missing or invalid token"
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden, "forbidden", "access refused"
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound, "not_found", "not found"
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge, "too_large", "request body too large"
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest, "bad_request", publicMessage(err)
	case errors.Is(err, ErrTooManyConnections):
		return http.StatusTooManyRequests, "too_many_connections", "too many connections"
	case errors.Is(err, ErrTimeout):
		return http.StatusRequestTimeout, "timeout", "request body not received in time"
	case errors.Is(err, ErrClosed), errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable, "unavailable", "service unavailable"
	default:
		return http.StatusInternalServerError, "internal", "internal error"
	}
}

// publicMessage is the text of a bad-request error without the sentinel prefix.
func publicMessage(err error) string {
	var pe *inputError
	if errors.As(err, &pe) {
		return pe.msg
	}
	return "bad request"
}

// inputError carries a message that is safe to show the client.
type inputError struct{ msg string }

func (e *inputError) Error() string { return ErrBadRequest.Error() + ": " + e.msg }
func (e *inputError) Unwrap() error { return ErrBadRequest }

func badRequest(msg string) error { return &inputError{msg: msg} }

// writeError answers with the contract's JSON error for err.
func writeError(c *gin.Context, err error) {
	status, code, msg := statusOf(err)
	writeErrorCode(c, status, code, msg)
}

func writeErrorCode(c *gin.Context, status int, code, msg string) {
	if status == http.StatusUnauthorized {
		c.Header("WWW-Authenticate", "Bearer")
	}
	c.AbortWithStatusJSON(status, errorBody{Error: errorDetail{Code: code, Message: msg}})
}
