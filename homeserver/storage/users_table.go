package storage

import (
	"context"
	"fmt"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// User is an account of the tenant.
type User struct {
	Localpart    string
	PasswordHash string
	DisplayName  string
	AvatarURL    string
	Admin        bool
	Deactivated  bool
	CreatedTS    int64
}

// ErrUserExists is returned by CreateUser for a taken localpart.
var ErrUserExists = fmt.Errorf("user exists")

// CreateUser inserts a user.
func CreateUser(ctx context.Context, q pgdb.DBTX, u User) error {
	_, err := q.Exec(ctx, `INSERT INTO users (localpart, password_hash, displayname, admin, created_ts)
		VALUES ($1, nullif($2, ''), nullif($3, ''), $4, $5)`, u.Localpart, u.PasswordHash, u.DisplayName, u.Admin, u.CreatedTS)
	if pgdb.IsUniqueViolation(err) {
		return ErrUserExists
	}
	if err != nil {
		return fmt.Errorf("insert user %s: %w", u.Localpart, err)
	}
	return nil
}

// GetUser reads a user by localpart.
func GetUser(ctx context.Context, q pgdb.DBTX, localpart string) (User, error) {
	u := User{Localpart: localpart}
	err := q.QueryRow(ctx, `SELECT coalesce(password_hash, ''), coalesce(displayname, ''), coalesce(avatar_url, ''),
		admin, deactivated, created_ts FROM users WHERE localpart = $1`, localpart).
		Scan(&u.PasswordHash, &u.DisplayName, &u.AvatarURL, &u.Admin, &u.Deactivated, &u.CreatedTS)
	return u, noRows(err)
}

// CountUsers counts registered users.
func CountUsers(ctx context.Context, q pgdb.DBTX) (int, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n)
	return n, err
}

// SetPasswordHash replaces a user's password hash.
func SetPasswordHash(ctx context.Context, q pgdb.DBTX, localpart, hash string) error {
	_, err := q.Exec(ctx, `UPDATE users SET password_hash = $2 WHERE localpart = $1`, localpart, hash)
	return err
}

// SetDisplayName sets (or with "" clears) a user's display name.
func SetDisplayName(ctx context.Context, q pgdb.DBTX, localpart, name string) error {
	_, err := q.Exec(ctx, `UPDATE users SET displayname = nullif($2, '') WHERE localpart = $1`, localpart, name)
	return err
}

// SetAvatarURL sets (or with "" clears) a user's avatar.
func SetAvatarURL(ctx context.Context, q pgdb.DBTX, localpart, url string) error {
	_, err := q.Exec(ctx, `UPDATE users SET avatar_url = nullif($2, '') WHERE localpart = $1`, localpart, url)
	return err
}

// DeactivateUser marks a user deactivated, clears their profile and password and removes
// their devices, keys and pushers.
func DeactivateUser(ctx context.Context, q pgdb.DBTX, userID, localpart string) error {
	if _, err := q.Exec(ctx, `UPDATE users SET deactivated = true, password_hash = NULL, displayname = NULL, avatar_url = NULL
		WHERE localpart = $1`, localpart); err != nil {
		return fmt.Errorf("deactivate %s: %w", userID, err)
	}
	for _, stmt := range []string{
		`DELETE FROM devices WHERE user_id = $1`,
		`DELETE FROM device_keys WHERE user_id = $1`,
		`DELETE FROM one_time_keys WHERE user_id = $1`,
		`DELETE FROM fallback_keys WHERE user_id = $1`,
		`DELETE FROM pushers WHERE user_id = $1`,
		`DELETE FROM cross_signing_keys WHERE user_id = $1`,
		`DELETE FROM key_signatures WHERE signer_user_id = $1 OR target_user_id = $1`,
		`DELETE FROM key_backup_keys WHERE user_id = $1`,
		`DELETE FROM key_backup_versions WHERE user_id = $1`,
		`DELETE FROM to_device WHERE user_id = $1`,
		`DELETE FROM to_device_txns WHERE user_id = $1`,
		`DELETE FROM push_rules WHERE user_id = $1`,
		`DELETE FROM push_rule_overrides WHERE user_id = $1`,
	} {
		if _, err := q.Exec(ctx, stmt, userID); err != nil {
			return fmt.Errorf("deactivate %s: %w", userID, err)
		}
	}
	return nil
}

// DirectoryUser is a user directory search hit.
type DirectoryUser struct {
	UserID      string
	DisplayName string
	AvatarURL   string
}

// SearchUsers finds users by localpart or display name whom searcher may see: users sharing
// a room with the searcher or in a public room.
func SearchUsers(ctx context.Context, q pgdb.DBTX, serverName, searcher, term string, limit int) ([]DirectoryUser, error) {
	rows, err := q.Query(ctx, `
		SELECT '@' || u.localpart || ':' || $1, coalesce(u.displayname, ''), coalesce(u.avatar_url, '')
		FROM users u
		WHERE NOT u.deactivated
		  AND (u.localpart ILIKE '%' || $3 || '%' OR u.displayname ILIKE '%' || $3 || '%')
		  AND ('@' || u.localpart || ':' || $1 = $2 OR EXISTS (
			SELECT 1 FROM current_state m
			WHERE m.type = 'm.room.member' AND m.membership = 'join' AND m.state_key = '@' || u.localpart || ':' || $1
			  AND (EXISTS (SELECT 1 FROM current_state o WHERE o.room_id = m.room_id AND o.type = 'm.room.member'
			                AND o.state_key = $2 AND o.membership = 'join')
			       OR EXISTS (SELECT 1 FROM rooms r WHERE r.room_id = m.room_id AND r.published))))
		ORDER BY u.localpart LIMIT $4`, serverName, searcher, escapeLike(term), limit)
	if err != nil {
		return nil, fmt.Errorf("search users: %w", err)
	}
	defer rows.Close()
	var out []DirectoryUser
	for rows.Next() {
		var d DirectoryUser
		if err := rows.Scan(&d.UserID, &d.DisplayName, &d.AvatarURL); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func escapeLike(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r == '%' || r == '_' || r == '\\' {
			out = append(out, '\\')
		}
		out = append(out, r)
	}
	return string(out)
}
