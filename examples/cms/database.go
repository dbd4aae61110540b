package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/glebarez/sqlite"
	gomysql "github.com/go-sql-driver/mysql"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
)

// database is where the posts live: a DATABASE_URL (PostgreSQL or MySQL /
// MariaDB, which several instances can share) or a SQLite file.
type database struct {
	dialector gorm.Dialector
	// kind is "sqlite", "postgres" or "mysql".
	kind string
	// name says which database it is, for logs: no password, no query.
	name string
}

// datetimePrecision keeps MySQL's DATETIME columns to the microsecond, the
// precision the app's clock (gorm.Config.NowFunc) and PostgreSQL keep, so a
// timestamp reads back as it was written.
var datetimePrecision = 6

// openDatabase chooses the database: databaseURL when set (postgres://…,
// postgresql://…, mysql://…), else the SQLite file dbPath.
func openDatabase(databaseURL, dbPath string) (database, error) {
	u := strings.TrimSpace(databaseURL)
	if u == "" {
		if dbPath == "" {
			return database{}, errors.New("a database path or URL is required")
		}
		return database{dialector: sqlite.Open(sqliteDSN(dbPath)), kind: "sqlite", name: dbPath}, nil
	}
	scheme, _, ok := strings.Cut(u, "://")
	if !ok {
		return database{}, errors.New("DATABASE_URL must start with postgres://, postgresql:// or mysql://")
	}
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		pu, err := url.Parse(u)
		if err != nil {
			return database{}, errors.New("DATABASE_URL: not a valid postgres:// URL") // the URL may hold a password: not echoed
		}
		return database{dialector: postgres.Open(u), kind: "postgres", name: "postgres://" + pu.Host + pu.Path}, nil
	case "mysql":
		cfg, err := mysqlConfig(u)
		if err != nil {
			return database{}, err
		}
		return database{
			dialector: mysql.New(mysql.Config{DSNConfig: cfg, DefaultDatetimePrecision: &datetimePrecision}),
			kind:      "mysql",
			name:      "mysql://" + cfg.Addr + "/" + cfg.DBName,
		}, nil
	}
	return database{}, fmt.Errorf("DATABASE_URL: unsupported scheme %q (postgres, postgresql or mysql)", scheme)
}

// mysqlConfig reads a mysql:// URL in either of two forms:
//
//	mysql://user:pass@tcp(host:port)/db?param=value   the driver's own DSN after the scheme
//	mysql://user:pass@host:port/db?param=value        a URL (port 3306 by default; user and password percent-decoded)
//
// The app needs parseTime=true (time columns scan into time.Time), set
// whatever the URL says; loc defaults to UTC.
func mysqlConfig(u string) (*gomysql.Config, error) {
	rest := u[len("mysql://"):]
	var cfg *gomysql.Config
	if at := strings.LastIndex(rest, "@"); at >= 0 && (strings.Contains(rest[at:], "@tcp(") || strings.Contains(rest[at:], "@unix(")) ||
		!strings.Contains(rest, "@") && (strings.HasPrefix(rest, "tcp(") || strings.HasPrefix(rest, "unix(")) {
		c, err := gomysql.ParseDSN(rest)
		if err != nil {
			return nil, errors.New("DATABASE_URL: not a valid MySQL DSN after mysql://")
		}
		cfg = c
	} else {
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" {
			return nil, errors.New("DATABASE_URL: not a valid mysql:// URL")
		}
		cfg = gomysql.NewConfig()
		cfg.Net = "tcp"
		cfg.Addr = pu.Host
		if pu.Port() == "" {
			cfg.Addr = net.JoinHostPort(pu.Hostname(), "3306")
		}
		if pu.User != nil {
			cfg.User = pu.User.Username()
			cfg.Passwd, _ = pu.User.Password()
		}
		cfg.DBName = strings.TrimPrefix(pu.Path, "/")
		if cfg.Params == nil {
			cfg.Params = map[string]string{}
		}
		if q := pu.RawQuery; q != "" {
			// The driver parses its own parameters (timeouts, tls, loc, …):
			// let it, through the DSN form.
			c, err := gomysql.ParseDSN(cfg.FormatDSN() + "?" + q)
			if err != nil {
				return nil, fmt.Errorf("DATABASE_URL: bad MySQL parameters: %w", err)
			}
			cfg = c
		}
	}
	if cfg.DBName == "" {
		return nil, errors.New("DATABASE_URL: a MySQL database name is required (mysql://user@host:3306/db)")
	}
	cfg.ParseTime = true
	return cfg, nil
}
