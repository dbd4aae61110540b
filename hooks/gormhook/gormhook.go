// Package gormhook turns GORM writes into realtime record events, emitted
// only after the outermost transaction commits.
package gormhook

import (
	"context"

	"github.com/ginrealtime/realtime"
	"gorm.io/gorm"
)

// Publisher is what the hook needs of the realtime plugin (*realtime.Plugin
// implements it).
type Publisher interface {
	Publish(ctx context.Context, pub realtime.Publication) (string, error)
	Resync(ctx context.Context, collection string) error
}

var _ Publisher = (*realtime.Plugin)(nil)

// Option configures the hook.
type Option func(*Hook)

// Watch makes writes to model's table events of collection. model is a
// pointer to the model struct, e.g. Watch(&Post{}, "posts").
func Watch(model any, collection string) Option {
	return func(h *Hook) { h.watch = append(h.watch, watched{model: model, collection: collection}) }
}

type watched struct {
	model      any
	collection string
}

// Hook is a gorm.Plugin.
type Hook struct {
	pub   Publisher
	watch []watched
}

var _ gorm.Plugin = (*Hook)(nil)

// New returns the hook; install it with db.Use.
func New(pub Publisher, opts ...Option) *Hook {
	h := &Hook{pub: pub}
	for _, o := range opts {
		o(h)
	}
	return h
}

// Name implements gorm.Plugin.
func (h *Hook) Name() string { return "realtime:gormhook" }

// Initialize implements gorm.Plugin.
func (h *Hook) Initialize(db *gorm.DB) error { return nil }
