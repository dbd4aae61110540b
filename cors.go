package realtime

import (
	"fmt"
	"net/http"
	"time"

	"github.com/gin-contrib/cors"
)

// corsMaxAge is how long a browser may cache a preflight's answer.
const corsMaxAge = 10 * time.Minute

// corsConfig is the gin-contrib/cors configuration of the publish
// endpoints for origins (Config.CORSAllowedOrigins): the methods and
// headers those endpoints take, no credentials (the token travels in the
// Authorization header, never in a cookie a foreign page could use).
func corsConfig(origins []string) (cors.Config, error) {
	cc := cors.Config{
		AllowMethods: []string{http.MethodGet, http.MethodPost, http.MethodOptions},
		AllowHeaders: []string{"Authorization", "Content-Type"},
		MaxAge:       corsMaxAge,
	}
	for _, o := range origins {
		if o == "*" {
			cc.AllowAllOrigins = true
		}
	}
	if !cc.AllowAllOrigins {
		cc.AllowOrigins = origins
	}
	if err := cc.Validate(); err != nil {
		return cc, fmt.Errorf("%w: CORSAllowedOrigins: %w", ErrInvalidConfig, err)
	}
	return cc, nil
}
