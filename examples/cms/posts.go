package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/ginrealtime/realtime"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// collection is the name of the posts collection, on the REST routes, in
// ETags and on the realtime streams.
const collection = "posts"

// Post is the app's one model. Tenant is never serialized: tenants are kept
// apart by the queries and by the realtime plugin, not by the client.
// Counter is a number a client can set or add to (PATCH {"increment":1}
// adds atomically): a page's view count, a like button, and the fault test's
// per-write version.
type Post struct {
	ID        string    `json:"id" gorm:"primaryKey;size:40"`
	Tenant    string    `json:"-" gorm:"not null;size:191;index:idx_posts_tenant_created,priority:1"`
	Title     string    `json:"title" gorm:"not null"`
	Body      string    `json:"body" gorm:"not null"`
	Private   bool      `json:"private" gorm:"not null"`
	Author    string    `json:"author" gorm:"not null"`
	Counter   int64     `json:"counter" gorm:"not null;default:0"`
	CreatedAt time.Time `json:"created_at" gorm:"index:idx_posts_tenant_created,priority:2"`
	UpdatedAt time.Time `json:"updated_at"`
}

// AfterFind keeps the timestamps in UTC whatever the database driver
// returns (pgx answers in the process's local zone): the JSON, and so the
// ETag, of a version is the same on every instance. The GORM hook reloads
// records through this same query path.
func (p *Post) AfterFind(*gorm.DB) error {
	p.CreatedAt = p.CreatedAt.UTC()
	p.UpdatedAt = p.UpdatedAt.UTC()
	return nil
}

// Limits on what a client may write.
const (
	maxBodyBytes = 1 << 20
	maxTitle     = 300
	maxListed    = 500
)

// newID returns a random post id (26 characters of base32, 130 bits).
func newID() string { return strings.ToLower(rand.Text()) }

// createInput is the body of POST /posts.
type createInput struct {
	Title   string `json:"title"`
	Body    string `json:"body"`
	Private bool   `json:"private"`
}

// patchInput is the body of PATCH /posts/:id: absent (or null) fields are
// kept. Increment adds to the counter in the database (counter = counter +
// n), so concurrent increments on any instances all count; it cannot be
// combined with counter.
type patchInput struct {
	Title     *string `json:"title"`
	Body      *string `json:"body"`
	Private   *bool   `json:"private"`
	Counter   *int64  `json:"counter"`
	Increment *int64  `json:"increment"`
}

// errorJSON answers with the wire contract's error shape.
func errorJSON(c *gin.Context, status int, code, msg string) {
	c.AbortWithStatusJSON(status, gin.H{"error": gin.H{"code": code, "message": msg}})
}

func notFound(c *gin.Context) { errorJSON(c, http.StatusNotFound, "not_found", "not found") }

// internalError logs err and answers 500 without details.
func (a *app) internalError(c *gin.Context, op string, err error) {
	a.log.ErrorContext(c.Request.Context(), "cms: request failed", "op", op, "path", c.Request.URL.Path, "err", err)
	errorJSON(c, http.StatusInternalServerError, "internal", "internal error")
}

// readJSON decodes the request body into v: one JSON value, at most
// maxBodyBytes. It answers 400 or 413 itself and reports false on failure.
func readJSON(c *gin.Context, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, maxBodyBytes))
	err := dec.Decode(v)
	if err == nil {
		if _, extra := dec.Token(); extra != io.EOF {
			err = errors.New("trailing data after the JSON value")
		}
	}
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		errorJSON(c, http.StatusRequestEntityTooLarge, "too_large", "request body too large")
		return false
	}
	var typeErr *json.UnmarshalTypeError
	msg := "body must be a JSON object"
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		msg = fmt.Sprintf("field %q must be a JSON %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()))
	}
	errorJSON(c, http.StatusBadRequest, "bad_request", msg)
	return false
}

func jsonKind(goKind string) string {
	switch goKind {
	case "bool":
		return "boolean"
	case "string":
		return "string"
	case "int64":
		return "integer"
	}
	return "value"
}

func validTitle(s string) string {
	switch {
	case strings.TrimSpace(s) == "":
		return "title is required"
	case utf8.RuneCountInString(s) > maxTitle:
		return fmt.Sprintf("title is longer than %d characters", maxTitle)
	}
	return ""
}

// visible reports whether the identity may see p: its own tenant, and a
// private post only when it wrote it.
func visible(p *Post, id *realtime.Identity) bool {
	return p.Tenant == id.Tenant && (!p.Private || p.Author == id.User)
}

// writeCtx is the context of a write: the realtime GORM hook reads the
// tenant of the events it publishes from it.
func writeCtx(c *gin.Context, id *realtime.Identity) context.Context {
	return realtime.WithTenant(c.Request.Context(), id.Tenant)
}

// find loads the post (tenant, id); gorm.ErrRecordNotFound when absent.
func (a *app) find(ctx context.Context, tenant, id string) (*Post, error) {
	return findIn(a.db.WithContext(ctx), tenant, id)
}

// findIn loads the post (tenant, id) through db (a transaction, a session).
func findIn(db *gorm.DB, tenant, id string) (*Post, error) {
	var p Post
	if err := db.Where("tenant = ? AND id = ?", tenant, id).Take(&p).Error; err != nil {
		return nil, err
	}
	return &p, nil
}

// findLocked loads the post (tenant, id) in the transaction tx and locks its
// row until tx ends (SELECT … FOR UPDATE; SQLite ignores the clause, its
// write transactions take the database's lock when they begin): the
// compare-and-write of PATCH and DELETE holds across instances sharing the
// database.
func findLocked(tx *gorm.DB, tenant, id string) (*Post, error) {
	return findIn(tx.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}), tenant, id)
}

// findVisible loads the post of the request's :id that the caller may see,
// answering 404 (or 500) itself when there is none.
func (a *app) findVisible(c *gin.Context, ident *realtime.Identity) (*Post, bool) {
	p, err := a.find(c.Request.Context(), ident.Tenant, c.Param("id"))
	if errors.Is(err, gorm.ErrRecordNotFound) {
		notFound(c)
		return nil, false
	}
	if err != nil {
		a.internalError(c, "load post", err)
		return nil, false
	}
	if !visible(p, ident) {
		notFound(c) // never say that a private post exists
		return nil, false
	}
	return p, true
}

// errHidden ends a write transaction on a post that is absent or that the
// caller may not see (404).
var errHidden = errors.New("cms: no such post")

// staleError ends a write transaction whose If-Match does not match the
// post's current version, Current (412).
type staleError struct{ Current string }

func (e *staleError) Error() string { return "cms: If-Match does not match " + e.Current }

// lockVisible is findLocked for the caller's :id, errHidden when the caller
// may not see it, and If-Match checked against the locked version.
func (a *app) lockVisible(c *gin.Context, tx *gorm.DB, ident *realtime.Identity) (*Post, error) {
	p, err := findLocked(tx, ident.Tenant, c.Param("id"))
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, errHidden
	}
	if err != nil {
		return nil, err
	}
	if !visible(p, ident) {
		return nil, errHidden
	}
	if im := c.GetHeader("If-Match"); im != "" {
		tag, err := a.etag(p)
		if err != nil {
			return nil, err
		}
		if !etagListMatches(im, tag, true) {
			return nil, &staleError{Current: tag}
		}
	}
	return p, nil
}

// writeFailed answers a write transaction's error: 404, 412 or 500.
func (a *app) writeFailed(c *gin.Context, op string, err error) {
	var stale *staleError
	switch {
	case errors.Is(err, errHidden):
		notFound(c) // never say that a private post exists
	case errors.As(err, &stale):
		c.Header("ETag", stale.Current)
		errorJSON(c, http.StatusPreconditionFailed, "precondition_failed", "the post has changed since that version (If-Match)")
	default:
		a.internalError(c, op, err)
	}
}

// etag is the ETag of a post as read from the database: the realtime plugin
// computes the same string for the events the GORM hook publishes (it
// reloads the record too), so REST caching and SSE resume points agree.
func (a *app) etag(p *Post) (string, error) {
	return a.rt.ETag(collection, p.ID, p)
}

// respond sends p with its ETag.
func (a *app) respond(c *gin.Context, status int, p *Post) {
	tag, err := a.etag(p)
	if err != nil {
		a.internalError(c, "etag", err)
		return
	}
	respondTagged(c, status, p, tag)
}

// respondTagged sends p with tag, its ETag computed where p was read.
func respondTagged(c *gin.Context, status int, p *Post, tag string) {
	c.Header("ETag", tag)
	c.Header("Cache-Control", "private, no-cache")
	c.JSON(status, p)
}

// identity is the caller, set by rt.Authenticate on the API group.
func identity(c *gin.Context) *realtime.Identity {
	id, ok := realtime.IdentityFrom(c)
	if !ok {
		panic("cms: route without rt.Authenticate")
	}
	return id
}

// listPosts serves GET /posts: the caller's tenant's posts it may see, newest first.
func (a *app) listPosts(c *gin.Context) {
	ident := identity(c)
	posts := []Post{}
	err := a.db.WithContext(c.Request.Context()).
		Where("tenant = ? AND (private = ? OR author = ?)", ident.Tenant, false, ident.User).
		Order("created_at DESC, id").Limit(maxListed).Find(&posts).Error
	if err != nil {
		a.internalError(c, "list posts", err)
		return
	}
	c.Header("Cache-Control", "private, no-cache")
	c.JSON(http.StatusOK, posts)
}

// createPost serves POST /posts. The post is read back in the insert's
// transaction: the answer and its ETag are the version this insert
// committed, as GET marshals it.
func (a *app) createPost(c *gin.Context) {
	ident := identity(c)
	var in createInput
	if !readJSON(c, &in) {
		return
	}
	if msg := validTitle(in.Title); msg != "" {
		errorJSON(c, http.StatusBadRequest, "bad_request", msg)
		return
	}
	p := Post{ID: newID(), Tenant: ident.Tenant, Title: in.Title, Body: in.Body, Private: in.Private, Author: ident.User}
	var saved *Post
	var tag string
	err := a.db.WithContext(writeCtx(c, ident)).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&p).Error; err != nil {
			return err
		}
		var err error
		if saved, err = findIn(tx, ident.Tenant, p.ID); err != nil {
			return err
		}
		tag, err = a.etag(saved)
		return err
	})
	if err != nil {
		a.internalError(c, "create post", err)
		return
	}
	c.Header("Location", c.Request.URL.Path+"/"+saved.ID)
	respondTagged(c, http.StatusCreated, saved, tag)
}

// getPost serves GET /posts/:id, answering 304 to a matching If-None-Match.
func (a *app) getPost(c *gin.Context) {
	p, ok := a.findVisible(c, identity(c))
	if !ok {
		return
	}
	tag, err := a.etag(p)
	if err != nil {
		a.internalError(c, "etag", err)
		return
	}
	if inm := c.GetHeader("If-None-Match"); inm != "" && etagListMatches(inm, tag, false) {
		c.Header("ETag", tag)
		c.Header("Cache-Control", "private, no-cache")
		c.Status(http.StatusNotModified)
		return
	}
	a.respond(c, http.StatusOK, p)
}

// updatePost serves PATCH /posts/:id: the fields present are changed; a
// stale If-Match is answered 412 and changes nothing.
//
// The compare and the write run in one transaction holding the post's row
// lock (SELECT … FOR UPDATE), so If-Match compares against the version the
// update replaces even when other instances write the same post, and the
// answer carries the version this update committed: the post read again in
// the transaction, its ETag computed there, exactly as GET would marshal it.
func (a *app) updatePost(c *gin.Context) {
	ident := identity(c)
	var in patchInput
	if !readJSON(c, &in) {
		return
	}
	changes := map[string]any{}
	if in.Title != nil {
		if msg := validTitle(*in.Title); msg != "" {
			errorJSON(c, http.StatusBadRequest, "bad_request", msg)
			return
		}
		changes["title"] = *in.Title
	}
	if in.Body != nil {
		changes["body"] = *in.Body
	}
	if in.Private != nil {
		changes["private"] = *in.Private
	}
	switch {
	case in.Counter != nil && in.Increment != nil:
		errorJSON(c, http.StatusBadRequest, "bad_request", "counter and increment cannot be combined")
		return
	case in.Counter != nil:
		changes["counter"] = *in.Counter
	case in.Increment != nil:
		changes["counter"] = gorm.Expr("counter + ?", *in.Increment)
	}

	var saved *Post
	var tag string
	err := a.db.WithContext(writeCtx(c, ident)).Transaction(func(tx *gorm.DB) error {
		p, err := a.lockVisible(c, tx, ident)
		if err != nil {
			return err
		}
		if len(changes) > 0 {
			if err := tx.Model(p).Updates(changes).Error; err != nil {
				return err
			}
			if p, err = findLocked(tx, ident.Tenant, p.ID); err != nil {
				return err
			}
		}
		saved = p
		tag, err = a.etag(p)
		return err
	})
	if err != nil {
		a.writeFailed(c, "update post", err)
		return
	}
	respondTagged(c, http.StatusOK, saved, tag)
}

// deletePost serves DELETE /posts/:id (If-Match is honoured too, under the
// row lock as for PATCH).
func (a *app) deletePost(c *gin.Context) {
	ident := identity(c)
	err := a.db.WithContext(writeCtx(c, ident)).Transaction(func(tx *gorm.DB) error {
		p, err := a.lockVisible(c, tx, ident)
		if err != nil {
			return err
		}
		return tx.Delete(p).Error
	})
	if err != nil {
		a.writeFailed(c, "delete post", err)
		return
	}
	c.Status(http.StatusNoContent)
}

// etagListMatches reports whether the If-Match / If-None-Match header value
// (a comma-separated list of entity tags, or *) matches tag. If-Match uses
// the strong comparison (a weak tag never matches), If-None-Match the weak one.
func etagListMatches(header, tag string, strong bool) bool {
	if strings.TrimSpace(header) == "*" {
		return true
	}
	for _, t := range splitETags(header) {
		weak := strings.HasPrefix(t, "W/")
		if strong && weak {
			continue
		}
		if strings.TrimPrefix(t, "W/") == strings.TrimPrefix(tag, "W/") {
			return true
		}
	}
	return false
}

// splitETags splits a list of entity tags; commas inside quotes are kept.
func splitETags(h string) []string {
	var out []string
	for {
		h = strings.TrimLeft(h, " \t,")
		if h == "" {
			return out
		}
		start := 0
		if strings.HasPrefix(h, "W/") {
			start = 2
		}
		end := len(h)
		if start < len(h) && h[start] == '"' {
			if i := strings.IndexByte(h[start+1:], '"'); i >= 0 {
				end = start + 1 + i + 1
			}
		} else if i := strings.IndexByte(h, ','); i >= 0 {
			end = i
		}
		out = append(out, strings.TrimSpace(h[:end]))
		h = h[end:]
	}
}

// loadTx loads the post (tenant, id) in tx for the plugin's Config.Loader
// (through the hook's versioned loader), or realtime.ErrNotFound. It does
// not decide visibility: authorize does.
func (a *app) loadTx(_ context.Context, tx *gorm.DB, ref realtime.Ref) (any, error) {
	if ref.Collection != collection {
		return nil, realtime.ErrNotFound
	}
	var p Post
	err := tx.Where("tenant = ? AND id = ?", ref.Tenant, ref.ID).Take(&p).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, realtime.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// authorize is the plugin's Config.Authorize. Tenants are kept apart by the
// plugin (a stream key carries the token's tenant); this hides private posts
// from everyone but their author: 403 at subscribe time, and frames skipped
// on the collection stream (a record stream ends).
//
// a.Record is the loaded post at subscribe time and the event's data before
// a frame; before a deleted frame it is the post as it was before the delete
// (the GORM hook publishes it as the event's Prior; subscribers only ever
// receive {"id":…}), so the deletion of a private post stays private too.
func (a *app) authorize(_ context.Context, acc realtime.Access) error {
	if acc.Identity == nil || acc.Ref.Tenant != acc.Identity.Tenant {
		return realtime.ErrNotFound
	}
	if acc.Ref.ID == "" {
		return nil // the collection stream: each frame is checked on its own
	}
	if acc.Record == nil {
		return nil // absent: nothing to hide
	}
	var v struct {
		Private bool   `json:"private"`
		Author  string `json:"author"`
	}
	if err := json.Unmarshal(acc.Record, &v); err != nil {
		return realtime.ErrForbidden // not a post: show nothing
	}
	if v.Private && v.Author != acc.Identity.User {
		return realtime.ErrForbidden
	}
	return nil
}
