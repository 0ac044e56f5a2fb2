package devoidc

import (
	"html/template"
	"net/http"
	"strings"
)

var pageTemplate = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Mayfly dev sign-in</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 34rem; margin: 3rem auto; padding: 0 1rem; }
.warn { background: #fff3cd; border: 1px solid #e0b000; padding: .6rem .8rem; }
.err { color: #a00; }
label { display: block; margin-top: 1rem; }
input { font-size: 1.1rem; padding: .3rem; }
button { margin-top: 1.2rem; font-size: 1rem; padding: .4rem 1rem; }
td { padding: .1rem .8rem .1rem 0; }
</style>
</head>
<body>
<h1>Mayfly dev sign-in</h1>
<p class="warn"><strong>Development only.</strong> This is the local identity provider of
<code>mayflyd dev</code>. It asks for no password: whoever uses this page can sign in as anyone.</p>
{{if .Done}}
<p>{{.Done}}</p>
<p>You can close this window and go back to the terminal.</p>
{{else}}
{{if .Error}}<p class="err">{{.Error}}</p>{{end}}
<form method="POST">
<label>Code shown by <code>mayfly login</code>
<input name="user_code" value="{{.UserCode}}" autocomplete="off" autofocus required></label>
<label>Sign in as
<input name="user" list="dev-users" value="{{.User}}" autocomplete="off" required></label>
<datalist id="dev-users">{{range .Users}}<option value="{{.Name}}">{{end}}</datalist>
<button name="action" value="approve" type="submit">Sign in</button>
<button name="action" value="deny" type="submit" formnovalidate>Deny</button>
</form>
<h2>Dev users</h2>
<table>{{range .Users}}<tr><td><code>{{.Name}}</code></td><td>groups: {{range $i, $g := .Groups}}{{if $i}}, {{end}}{{$g}}{{else}}none{{end}}</td></tr>{{end}}</table>
<p>Any other name (lower-case letters, digits, '.', '_' or '-') signs in a user with no groups.</p>
{{end}}
</body>
</html>
`))

type pageData struct {
	UserCode, User string
	Error, Done    string
	Users          []User
}

// verifyPage shows the form (RFC 8628 §3.3), with the code filled in when
// the verification_uri_complete was opened.
func (p *Provider) verifyPage(w http.ResponseWriter, r *http.Request) {
	p.render(w, http.StatusOK, pageData{UserCode: r.URL.Query().Get("user_code")})
}

// verifySubmit approves (or, with action=deny, denies) a user code as the
// named user. It answers JSON when the request accepts JSON, and an HTML
// page otherwise; the status is 200 when it worked, 400 when it did not.
func (p *Provider) verifySubmit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "the body is not a form", http.StatusBadRequest)
		return
	}
	code := strings.TrimSpace(r.PostForm.Get("user_code"))
	name := strings.TrimSpace(r.PostForm.Get("user"))
	deny := r.PostForm.Get("action") == "deny"
	wantJSON := strings.Contains(r.Header.Get("Accept"), "application/json")

	u, err := p.approve(code, name, deny)
	if err != nil {
		if wantJSON {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		p.render(w, http.StatusBadRequest, pageData{UserCode: code, User: name, Error: err.Error()})
		return
	}
	if deny {
		p.log.Info("dev OIDC sign-in denied on the verification page")
		if wantJSON {
			writeJSON(w, http.StatusOK, map[string]string{"status": "denied"})
			return
		}
		p.render(w, http.StatusOK, pageData{Done: "Sign-in denied."})
		return
	}
	p.log.Info("dev OIDC sign-in approved on the verification page", "user", u.Name)
	if wantJSON {
		writeJSON(w, http.StatusOK, map[string]any{"status": "approved", "user": u.Name, "groups": u.Groups})
		return
	}
	p.render(w, http.StatusOK, pageData{Done: "Signed in as " + u.Name + "."})
}

func (p *Provider) render(w http.ResponseWriter, status int, d pageData) {
	d.Users = p.cfg.Users
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
	w.WriteHeader(status)
	_ = pageTemplate.Execute(w, d)
}
