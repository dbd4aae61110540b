package gormhook

// RefOf is refOf, for the external tests.
var RefOf = refOf
