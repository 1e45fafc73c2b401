package api

import "fmt"

// Role is what an API token may do. Each role may do what the ones
// before it may:
//
//   - viewer: every GET (devices, bundles, rollouts, drift, events,
//     metrics);
//   - operator: also creating and steering rollouts and experiments and
//     assigning bundles to devices;
//   - admin: also pushing bundles and deleting devices (the operator
//     token, auth.operatorTokenFile, is an admin's).
//
// A token whose role is below a route's answers 403.
type Role int

// The roles, in order.
const (
	RoleViewer Role = iota + 1
	RoleOperator
	RoleAdmin
)

var roleNames = []string{RoleViewer: "viewer", RoleOperator: "operator", RoleAdmin: "admin"}

func (r Role) String() string {
	if r < RoleViewer || r > RoleAdmin {
		return fmt.Sprintf("Role(%d)", int(r))
	}
	return roleNames[r]
}

// ParseRole parses viewer, operator or admin.
func ParseRole(s string) (Role, error) {
	for r := RoleViewer; r <= RoleAdmin; r++ {
		if roleNames[r] == s {
			return r, nil
		}
	}
	return 0, fmt.Errorf("role %q: want viewer, operator or admin", s)
}

// MarshalText writes the role's name.
func (r Role) MarshalText() ([]byte, error) {
	if r < RoleViewer || r > RoleAdmin {
		return nil, fmt.Errorf("no such role: %d", int(r))
	}
	return []byte(r.String()), nil
}

// UnmarshalText reads a role's name.
func (r *Role) UnmarshalText(b []byte) error {
	v, err := ParseRole(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Whoami is GET /api/v1/whoami: the caller's token's holder and role.
type Whoami struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}
