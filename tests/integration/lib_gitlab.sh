# lib_gitlab.sh - git servers on 127.0.0.1 for the module source tests:
# fixture repositories, git daemon (git://), OpenSSH sshd (ssh://) and a
# TLS https server running `git http-backend` (https://, basic auth).
#
# Source it from bash, then call the functions with a lab directory LAB
# (absolute, world-readable: the ssh user reads repositories from it).
# Every server runs in the background with its output in $LAB/<name>.log,
# its pid in $LAB/<name>.pid and its port in $LAB/<name>.port; the
# matching *_stop function kills that pid only.  A server counts as started
# once that very process listens on its port (not merely once the port
# answers: another process may have taken it); every wait has a generous
# bound, for slow machines.
#
#   gitlab_make_repo LAB NAME     $LAB/src/NAME (work tree) and $LAB/srv/NAME.git
#   gitlab_move_tag LAB NAME TAG  commit on main, force TAG onto it, force-push
#   gitlab_daemon_start LAB [PORT] / gitlab_daemon_stop LAB
#   gitlab_sshd_start LAB / gitlab_sshd_stop LAB      (root only)
#   gitlab_https_start LAB TOKEN / gitlab_https_stop LAB

GITLAB_SSH_USER=${GITLAB_SSH_USER:-mecorchgit}

_gitlab_git() {
	git -c user.name=mecorch-test -c user.email=test@mecorch.invalid \
		-c init.defaultBranch=main -c advice.detachedHead=false "$@"
}

# shellcheck source=lib_net.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib_net.sh" || return 1

# Wait (up to 60 s) until server PID listens on port PORT; fails early when
# PID has exited (the port was taken, or it could not start).
gitlab_wait_listen() { # PORT PID
	wait_listen "$1" "$2" 60 && return 0
	echo "port $1 did not open (server pid $2)" >&2
	return 1
}

# Wait until 127.0.0.1:$1 accepts connections (up to 60 s).
gitlab_wait_port() {
	local end=$((SECONDS + 60))
	while :; do
		if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then
			return 0
		fi
		[ "$SECONDS" -ge "$end" ] && break
		sleep 0.05
	done
	echo "port $1 did not open" >&2
	return 1
}

# Wait until 127.0.0.1:$1 refuses connections (up to 60 s).
gitlab_wait_port_closed() {
	local end=$((SECONDS + 60))
	while :; do
		if ! (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then
			return 0
		fi
		[ "$SECONDS" -ge "$end" ] && break
		sleep 0.05
	done
	echo "port $1 still open" >&2
	return 1
}

_gitlab_module() { # dir name version
	mkdir -p "$1"
	printf 'return { name = "%s", version = "%s" }\n' "$2" "$3" >"$1/module.lua"
}

# Releases on main: v1.0.0 (annotated), 1.0.5 (no v, lightweight),
# v1.1.0 (lightweight), v2.0.0 (annotated), v2.1.0-rc1 (pre-release);
# branch "feature" forks from v1.1.0.  Each commit writes its version into
# module.lua (root module) and modules/net/module.lua (a subdir module that
# also has a nested file, an executable script and a relative symlink).
gitlab_make_repo() {
	local lab=$1 name=$2 src=$1/src/$2 v
	rm -rf "$src" "$lab/srv/$name.git"
	mkdir -p "$src" "$lab/srv"
	_gitlab_git init -q "$src" || return 1
	for v in 1.0.0 1.0.5 1.1.0 2.0.0 2.1.0-rc1; do
		_gitlab_module "$src" root "$v"
		_gitlab_module "$src/modules/net" net "$v"
		mkdir -p "$src/modules/net/lib" "$src/modules/net/bin"
		printf 'return "util %s"\n' "$v" >"$src/modules/net/lib/util.lua"
		printf '#!/bin/sh\necho %s\n' "$v" >"$src/modules/net/bin/run.sh"
		chmod 755 "$src/modules/net/bin/run.sh"
		ln -sfn lib/util.lua "$src/modules/net/util.lua"
		_gitlab_git -C "$src" add -A && _gitlab_git -C "$src" commit -q -m "release $v" || return 1
		case $v in
		1.0.0 | 2.0.0) _gitlab_git -C "$src" tag -a "v$v" -m "release $v" ;;
		1.0.5) _gitlab_git -C "$src" tag "$v" ;;
		*) _gitlab_git -C "$src" tag "v$v" ;;
		esac || return 1
		if [ "$v" = 1.1.0 ]; then
			_gitlab_git -C "$src" branch feature
		fi
	done
	_gitlab_git -C "$src" checkout -q feature &&
		_gitlab_module "$src" root feature &&
		_gitlab_git -C "$src" commit -q -am "feature work" &&
		_gitlab_git -C "$src" checkout -q main || return 1
	_gitlab_git clone -q --bare "$src" "$lab/srv/$name.git" || return 1
	chmod -R a+rX "$lab/srv" "$lab/src"
}

# Force TAG onto a new commit of main and force-push it to the server.
gitlab_move_tag() {
	local lab=$1 name=$2 tag=$3 src=$1/src/$2
	_gitlab_module "$src" root "moved-$tag" &&
		_gitlab_git -C "$src" commit -q -am "moved $tag" &&
		_gitlab_git -C "$src" tag -f -a "$tag" -m "moved $tag" >/dev/null &&
		_gitlab_git -C "$src" push -q -f "$lab/srv/$name.git" main "refs/tags/$tag" &&
		chmod -R a+rX "$lab/srv"
}

# git daemon for $LAB/srv on 127.0.0.1 (a new free port unless PORT given).
gitlab_daemon_start() {
	local lab=$1 port=${2:-} try
	for try in 1 2 3 4 5; do
		[ -n "$port" ] || port=$(it_free_port)
		git daemon --reuseaddr --base-path="$lab/srv" --export-all \
			--listen=127.0.0.1 --port="$port" "$lab/srv" \
			</dev/null >>"$lab/daemon.log" 2>&1 &
		echo $! >"$lab/daemon.pid"
		if gitlab_wait_listen "$port" "$(cat "$lab/daemon.pid")"; then
			echo "$port" >"$lab/daemon.port"
			return 0
		fi
		kill "$(cat "$lab/daemon.pid")" 2>/dev/null
		[ -n "${2:-}" ] || port=
	done
	return 1
}

# Stop the git daemon; fails when its port still answers 60 s later.
gitlab_daemon_stop() {
	local lab=$1
	[ -f "$lab/daemon.pid" ] || return 0
	kill "$(cat "$lab/daemon.pid")" 2>/dev/null
	rm -f "$lab/daemon.pid"
	[ -f "$lab/daemon.port" ] || return 0
	gitlab_wait_port_closed "$(cat "$lab/daemon.port")"
}

# OpenSSH sshd on 127.0.0.1 with a dedicated user ($GITLAB_SSH_USER, shell
# /bin/sh) allowed in with $LAB/ssh/client_ed25519.  Also writes:
#   $LAB/ssh/other_ed25519     a key the server does not accept
#   $LAB/ssh/known_hosts       "[127.0.0.1]:PORT ssh-ed25519 ..."
#   $LAB/ssh/known_hosts_hashed  the same, hashed (ssh-keygen -H)
#   $LAB/ssh/known_hosts_other   127.0.0.1:PORT with another host key
#   $LAB/ssh/fingerprint       SHA256:... of the host key
gitlab_sshd_start() {
	local lab=$1 d=$1/ssh home port try
	mkdir -p "$d" /run/sshd && chmod 755 /run/sshd "$d" || return 1
	if ! id "$GITLAB_SSH_USER" >/dev/null 2>&1; then
		useradd -m -d "/home/$GITLAB_SSH_USER" -s /bin/sh "$GITLAB_SSH_USER" || return 1
	fi
	usermod -p '*' "$GITLAB_SSH_USER" || return 1
	home=$(getent passwd "$GITLAB_SSH_USER" | cut -d: -f6)
	mkdir -p "$home"
	printf '[safe]\n\tdirectory = *\n' >"$home/.gitconfig"
	chown "$GITLAB_SSH_USER" "$home" "$home/.gitconfig"
	rm -f "$d"/hostkey* "$d"/client_ed25519* "$d"/other_ed25519* "$d"/otherhost*
	ssh-keygen -q -t ed25519 -N '' -C mecorch-test-host -f "$d/hostkey_ed25519" &&
		ssh-keygen -q -t ed25519 -N '' -C mecorch-test-other-host -f "$d/otherhost_ed25519" &&
		ssh-keygen -q -t ed25519 -N '' -C mecorch-test-client -f "$d/client_ed25519" &&
		ssh-keygen -q -t ed25519 -N '' -C mecorch-test-other -f "$d/other_ed25519" || return 1
	cp "$d/client_ed25519.pub" "$d/authorized_keys"
	chmod 644 "$d/authorized_keys"
	for try in 1 2 3 4 5; do
		port=$(it_free_port)
		cat >"$d/sshd_config" <<-EOF
			Port $port
			ListenAddress 127.0.0.1
			HostKey $d/hostkey_ed25519
			PidFile $d/sshd.pidfile
			AuthorizedKeysFile $d/authorized_keys
			AllowUsers $GITLAB_SSH_USER
			PubkeyAuthentication yes
			PasswordAuthentication no
			KbdInteractiveAuthentication no
			PermitRootLogin no
			UsePAM no
			StrictModes no
			MaxAuthTries 6
			LogLevel VERBOSE
		EOF
		/usr/sbin/sshd -t -f "$d/sshd_config" || return 1
		/usr/sbin/sshd -D -f "$d/sshd_config" -E "$lab/sshd.log" </dev/null >/dev/null 2>&1 &
		echo $! >"$lab/sshd.pid"
		if gitlab_wait_listen "$port" "$(cat "$lab/sshd.pid")"; then
			echo "$port" >"$lab/sshd.port"
			break
		fi
		kill "$(cat "$lab/sshd.pid")" 2>/dev/null
		port=
	done
	[ -n "$port" ] || return 1
	echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$d/hostkey_ed25519.pub")" >"$d/known_hosts"
	cp "$d/known_hosts" "$d/known_hosts_hashed"
	ssh-keygen -q -H -f "$d/known_hosts_hashed" >/dev/null 2>&1 && rm -f "$d/known_hosts_hashed.old"
	echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$d/otherhost_ed25519.pub")" >"$d/known_hosts_other"
	ssh-keygen -l -E sha256 -f "$d/hostkey_ed25519.pub" | cut -d' ' -f2 >"$d/fingerprint"
}

gitlab_sshd_stop() {
	local lab=$1
	[ -f "$lab/sshd.pid" ] || return 0
	kill "$(cat "$lab/sshd.pid")" 2>/dev/null
	rm -f "$lab/sshd.pid"
	return 0
}

# A test CA ($LAB/tls/ca.pem) and a server certificate for 127.0.0.1.
gitlab_tls_certs() {
	local d=$1/tls
	mkdir -p "$d"
	[ -f "$d/server.pem" ] && return 0
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=mecorch test CA" \
		-keyout "$d/ca.key" -out "$d/ca.pem" \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
		>/dev/null 2>&1 || return 1
	openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
		-keyout "$d/server.key" -out "$d/server.csr" >/dev/null 2>&1 || return 1
	printf 'subjectAltName=IP:127.0.0.1,DNS:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$d/ext.cnf"
	openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
		-CAcreateserial -days 2 -extfile "$d/ext.cnf" -out "$d/server.pem" >/dev/null 2>&1
}

# https on 127.0.0.1 serving $LAB/srv through `git http-backend`; every
# request needs basic auth whose password is TOKEN (any user name).  The
# server binds port 0 itself and writes the port it got.
gitlab_https_start() {
	local lab=$1 token=$2 i
	gitlab_tls_certs "$lab" || return 1
	cat >"$lab/https_git.py" <<-'EOF'
		import base64, http.server, os, ssl, subprocess, sys

		root, cert, key, token, port_file = sys.argv[1:6]

		class Handler(http.server.BaseHTTPRequestHandler):
		    protocol_version = "HTTP/1.1"

		    def log_message(self, fmt, *args):
		        sys.stderr.write("https: " + (fmt % args) + "\n")

		    def reply(self, status, headers, body):
		        head = "HTTP/1.1 %d %s\r\n" % (status, self.responses.get(status, ("",))[0])
		        for k, v in headers + [("Content-Length", str(len(body)))]:
		            head += "%s: %s\r\n" % (k, v)
		        self.log_request(status)
		        self.wfile.write(head.encode() + b"\r\n" + body)

		    def body(self):
		        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
		            data = b""
		            while True:
		                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
		                if size == 0:
		                    self.rfile.readline()
		                    return data
		                data += self.rfile.read(size)
		                self.rfile.readline()
		        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

		    def authorised(self):
		        auth = self.headers.get("Authorization", "")
		        if not auth.startswith("Basic "):
		            return None
		        try:
		            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
		        except Exception:
		            return None
		        return user if password == token else None

		    def git(self):
		        data = self.body()
		        user = self.authorised()
		        if user is None:
		            self.reply(401, [("WWW-Authenticate", 'Basic realm="git"')], b"authentication required\n")
		            return
		        sys.stderr.write("https-user: %s\n" % user)
		        path, _, query = self.path.partition("?")
		        env = {
		            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
		            "GIT_PROJECT_ROOT": root, "GIT_HTTP_EXPORT_ALL": "1",
		            "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
		            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
		            "CONTENT_LENGTH": str(len(data)), "REMOTE_USER": user,
		            "REMOTE_ADDR": self.client_address[0],
		            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
		            "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory",
		            "GIT_CONFIG_VALUE_0": "*",
		        }
		        out = subprocess.run(["git", "http-backend"], input=data, env=env,
		                             capture_output=True).stdout
		        sep = out.find(b"\r\n\r\n")
		        head, rest = (out[:sep], out[sep + 4:]) if sep >= 0 else out.split(b"\n\n", 1)
		        status, headers = 200, []
		        for line in head.replace(b"\r\n", b"\n").split(b"\n"):
		            k, _, v = line.decode().partition(":")
		            if k.lower() == "status":
		                status = int(v.strip().split()[0])
		            elif k:
		                headers.append((k, v.strip()))
		        self.reply(status, headers, rest)

		    do_GET = git
		    do_POST = git

		ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
		ctx.load_cert_chain(cert, key)
		httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
		httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
		with open(port_file + ".tmp", "w") as f:
		    f.write("%d\n" % httpd.server_address[1])
		os.rename(port_file + ".tmp", port_file)
		httpd.serve_forever()
	EOF
	rm -f "$lab/https.port"
	python3 "$lab/https_git.py" "$lab/srv" "$lab/tls/server.pem" "$lab/tls/server.key" \
		"$token" "$lab/https.port" </dev/null >>"$lab/https.log" 2>&1 &
	echo $! >"$lab/https.pid"
	for i in $(seq 1 1200); do # up to 60 s
		[ -s "$lab/https.port" ] && gitlab_wait_port "$(cat "$lab/https.port")" && return 0
		kill -0 "$(cat "$lab/https.pid")" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

gitlab_https_stop() {
	local lab=$1
	[ -f "$lab/https.pid" ] || return 0
	kill "$(cat "$lab/https.pid")" 2>/dev/null
	rm -f "$lab/https.pid"
	return 0
}
