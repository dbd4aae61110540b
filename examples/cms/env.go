package main

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/ginrealtime/realtime"
)

// The operations side of the environment: the plugin's settings, the
// admin listener and the log level (README: "Configuration from the
// environment"). Unset variables keep the plugin's defaults; a value that
// does not parse is an error, and the plugin refuses values out of range.

// opsConfig is what loadOpsEnv reads.
type opsConfig struct {
	// adminAddr is the admin listener's address ("": none); adminSet
	// tells that ADMIN_ADDR named it (else it is the default, given up
	// when taken: several instances on one host).
	adminAddr string
	adminSet  bool
	// pprof mounts /debug/pprof/ on the admin listener.
	pprof bool
	// tenants is the number of tenants realtime_tenant_connections shows.
	tenants int
	// logLevel is the level of the app's and the plugin's logs.
	logLevel slog.Level
}

// defaultAdminAddr is the admin listener's address when ADMIN_ADDR is unset.
const defaultAdminAddr = "127.0.0.1:9090"

// setting is one plugin setting read from the environment.
type setting struct {
	env   string
	apply func(c *realtime.Config, v string) error
}

func intSetting(env string, field func(*realtime.Config) *int) setting {
	return setting{env, func(c *realtime.Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%s must be an integer, got %q", env, v)
		}
		*field(c) = n
		return nil
	}}
}

func bytesSetting(env string, field func(*realtime.Config) *int64) setting {
	return setting{env, func(c *realtime.Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("%s must be a number of bytes, got %q", env, v)
		}
		*field(c) = n
		return nil
	}}
}

func durationSetting(env string, field func(*realtime.Config) *time.Duration) setting {
	return setting{env, func(c *realtime.Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%s must be a duration such as 30s, got %q", env, v)
		}
		*field(c) = d
		return nil
	}}
}

// settings are the plugin settings the environment may set, in the
// README's order.
var settings = []setting{
	intSetting("RT_BUFFER_SIZE", func(c *realtime.Config) *int { return &c.BufferSize }),
	durationSetting("RT_BUFFER_MAX_AGE", func(c *realtime.Config) *time.Duration { return &c.BufferMaxAge }),
	bytesSetting("RT_BUFFER_MEMORY", func(c *realtime.Config) *int64 { return &c.BufferMemory }),
	intSetting("RT_QUEUE_SIZE", func(c *realtime.Config) *int { return &c.QueueSize }),
	intSetting("RT_WS_SEND_QUEUE", func(c *realtime.Config) *int { return &c.WSSendQueue }),
	durationSetting("RT_HEARTBEAT", func(c *realtime.Config) *time.Duration { return &c.Heartbeat }),
	durationSetting("RT_RETRY", func(c *realtime.Config) *time.Duration { return &c.Retry }),
	durationSetting("RT_RESUME_WAIT", func(c *realtime.Config) *time.Duration { return &c.ResumeWait }),
	durationSetting("RT_WRITE_TIMEOUT", func(c *realtime.Config) *time.Duration { return &c.WriteTimeout }),
	intSetting("RT_WRITERS", func(c *realtime.Config) *int { return &c.Writers }),
	intSetting("RT_WRITERS_AT_ONCE", func(c *realtime.Config) *int { return &c.WritersAtOnce }),
	durationSetting("RT_WRITE_COALESCE", func(c *realtime.Config) *time.Duration { return &c.WriteCoalesce }),
	{"RT_DISABLE_HIJACK", func(c *realtime.Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("RT_DISABLE_HIJACK must be true or false, got %q", v)
		}
		c.DisableHijack = b
		return nil
	}},
	durationSetting("RT_POLL_TIMEOUT", func(c *realtime.Config) *time.Duration { return &c.PollTimeout }),
	durationSetting("RT_POLL_MAX_TIMEOUT", func(c *realtime.Config) *time.Duration { return &c.PollMaxTimeout }),
	bytesSetting("RT_MAX_BODY_BYTES", func(c *realtime.Config) *int64 { return &c.MaxBodyBytes }),
	durationSetting("RT_JWT_LEEWAY", func(c *realtime.Config) *time.Duration { return &c.JWTLeeway }),
	intSetting("RT_WS_MAX_CONNS_PER_USER", func(c *realtime.Config) *int { return &c.WSMaxConnsPerUser }),
	intSetting("RT_WS_MAX_CONNS_PER_TENANT", func(c *realtime.Config) *int { return &c.WSMaxConnsPerTenant }),
	bytesSetting("RT_WS_MAX_MESSAGE_BYTES", func(c *realtime.Config) *int64 { return &c.WSMaxMessageBytes }),
	durationSetting("RT_WS_PING_INTERVAL", func(c *realtime.Config) *time.Duration { return &c.WSPingInterval }),
	durationSetting("RT_WS_PONG_WAIT", func(c *realtime.Config) *time.Duration { return &c.WSPongWait }),
	intSetting("RT_WS_MAX_CHANNELS", func(c *realtime.Config) *int { return &c.WSMaxChannels }),
	intSetting("RT_WS_MAX_RECORDS", func(c *realtime.Config) *int { return &c.WSMaxRecords }),
}

// tuneFromEnv returns the function that applies the plugin settings set in
// the environment to a realtime.Config (appConfig.Tune), or an error for a
// value that does not parse.
func tuneFromEnv(getenv func(string) string) (func(*realtime.Config), error) {
	var set []func(*realtime.Config) error
	probe := realtime.Config{}
	for _, s := range settings {
		v := strings.TrimSpace(getenv(s.env))
		if v == "" {
			continue
		}
		if err := s.apply(&probe, v); err != nil {
			return nil, err
		}
		set = append(set, func(c *realtime.Config) error { return s.apply(c, v) })
	}
	return func(c *realtime.Config) {
		for _, f := range set {
			_ = f(c) // parsed above
		}
	}, nil
}

// loadOpsEnv reads the admin listener, the log level and the plugin
// settings into cfg.
func loadOpsEnv(getenv func(string) string, cfg *envConfig) error {
	ops := opsConfig{adminAddr: defaultAdminAddr, logLevel: slog.LevelInfo}
	switch v := strings.TrimSpace(getenv("ADMIN_ADDR")); v {
	case "":
	case "off", "none":
		ops.adminAddr = ""
	default:
		ops.adminAddr, ops.adminSet = v, true
	}
	if v := getenv("ADMIN_PPROF"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("ADMIN_PPROF must be true or false, got %q", v)
		}
		ops.pprof = b
	}
	if v := getenv("METRICS_TENANTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1000 {
			return fmt.Errorf("METRICS_TENANTS must be a number from 0 to 1000, got %q", v)
		}
		ops.tenants = n
	}
	if v := getenv("LOG_LEVEL"); v != "" {
		if err := ops.logLevel.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("LOG_LEVEL must be debug, info, warn or error, got %q", v)
		}
	}
	tune, err := tuneFromEnv(getenv)
	if err != nil {
		return err
	}
	cfg.ops = ops
	cfg.app.Tune = tune
	return nil
}
