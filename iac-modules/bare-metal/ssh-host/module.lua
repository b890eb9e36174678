--[[
bare-metal/ssh-host - packages, files, services and users on one host,
managed over SSH (ctx.ssh) with nothing installed on the host but a POSIX
sh and the usual tools (coreutils, getent).

  package  installed through apt-get, apk, dnf or yum, whichever the host
           has (`command -v`); a host without one is an error on create.
           Destroy leaves the package installed unless remove_on_destroy.
  file     written over SFTP (or, with sudo, through `sudo sh`, atomically
           by temp file + rename); drift is the sha256 of the remote
           content (`sha256sum`), its mode and, when given, owner/group.
  service  a process supervised through a pidfile, for hosts without (or
           instead of) an init system: started with nohup (and setsid)
           in the background, tagged by an environment variable holding
           its name and the sha256 of its command, which read() checks on
           the live pid (/proc/PID/environ), so a dead process, a reused pid
           or another command all show as a change.
  user     useradd / usermod / userdel (busybox adduser / deluser as a
           fallback); read through `getent passwd`.

Every resource carries the connection (host, port, user, key or key_file,
host_key_sha256 or known_hosts, sudo); changing host or port replaces it.
See README.md.
]]

local R = require("remote")

local DEFAULT_TIMEOUT_MS = 120000
local PACKAGE_TIMEOUT_MS = 900000

-- ---------------------------------------------------------------------------
-- helpers

local function copy(t)
  local c = {}
  for k, v in pairs(t) do
    c[k] = v
  end
  return c
end

--- The 4-digit octal string ("0644") of a mode given as an integer (420)
--- or as an octal string ("644", "0644"); symbolic modes are refused.
local function mode_string(m, what)
  local n
  if math.type(m) == "integer" then
    n = m
  elseif type(m) == "string" and string.find(m, "^0?[0-7][0-7][0-7][0-7]?$") then
    n = tonumber(m, 8)
  end
  if not n or n < 0 or n > 4095 then
    error(string.format("%s: mode must be an octal string like \"0644\" or an integer, not %s",
      what, tostring(m)), 0)
  end
  return string.format("%04o", n)
end

local function sha256(ctx, s)
  return ctx.crypto.sha256(s)
end

-- ---------------------------------------------------------------------------
-- package

local PKG_SCRIPT = [[
# ssh-host: package (query, install, remove)
name=$1 action=$2
pm=
for c in apt-get apk dnf yum; do
  if command -v "$c" >/dev/null 2>&1; then pm=$c; break; fi
done
echo "pm=$pm"
installed() {
  case $pm in
  apt-get) s=$(dpkg-query -W -f='${Status}|${Version}' "$name" 2>/dev/null) || return 1
           case $s in "install ok installed|"*) echo "version=${s#*|}"; return 0;; esac
           return 1 ;;
  apk) apk info -e "$name" >/dev/null 2>&1 || return 1
       echo "version=$(apk info -e -v "$name" 2>/dev/null | head -n 1 | sed "s/^$name-//")"; return 0 ;;
  dnf|yum) v=$(rpm -q --qf '%{VERSION}-%{RELEASE}' "$name" 2>/dev/null) || return 1
           echo "version=$v"; return 0 ;;
  esac
  return 1
}
if [ -z "$pm" ]; then
  [ "$action" = read ] && { echo state=nopm; exit 0; }
  echo "no package manager (apt-get, apk, dnf or yum) on this host: cannot install $name" >&2
  exit 3
fi
case $action in
read)
  if installed; then echo state=installed; else echo state=absent; fi ;;
install)
  if installed; then echo state=installed; exit 0; fi
  if [ "$(id -u)" != 0 ]; then
    echo "installing $name needs root: connect as root or set sudo = true" >&2; exit 4
  fi
  case $pm in
  apt-get) export DEBIAN_FRONTEND=noninteractive
           apt-get install -y -q --no-install-recommends "$name" >&2 ||
             { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "$name" >&2; } ;;
  apk) apk add --no-cache "$name" >&2 ;;
  *) "$pm" install -y "$name" >&2 ;;
  esac || exit 5
  installed || { echo "$pm reported success but $name is not installed" >&2; exit 6; }
  echo state=installed ;;
remove)
  installed >/dev/null || exit 0
  if [ "$(id -u)" != 0 ]; then
    echo "removing $name needs root: connect as root or set sudo = true" >&2; exit 4
  fi
  case $pm in
  apt-get) DEBIAN_FRONTEND=noninteractive apt-get remove -y -q "$name" >&2 ;;
  apk) apk del "$name" >&2 ;;
  *) "$pm" remove -y "$name" >&2 ;;
  esac ;;
esac
]]

local pkg = {
  ---@param ctx table
  ---@param props table {connection..., name, remove_on_destroy}
  ---@return string id, table outputs
  create = function(ctx, props)
    local r = R.must(ctx, props, "installing package " .. props.name, PKG_SCRIPT,
      { props.name, "install" }, { privileged = true, timeout_ms = PACKAGE_TIMEOUT_MS })
    local kv = R.kv(r.stdout)
    return props.name, { version = kv.version or "", manager = kv.pm }
  end,

  ---@param ctx table
  ---@param id string|nil
  ---@param props table
  ---@return table|nil props_now, table|nil outputs, string|nil id
  read = R.recovering(function(ctx, id, props)
    local r = R.must(ctx, props, "querying package " .. props.name, PKG_SCRIPT,
      { props.name, "read" }, { privileged = true })
    local kv = R.kv(r.stdout)
    if kv.state ~= "installed" then
      return nil -- absent, or no package manager: create says why
    end
    return copy(props), { version = kv.version or "", manager = kv.pm }, props.name
  end),

  ---@return nil outputs unchanged
  update = function(ctx, id, old, new)
    return nil -- only remove_on_destroy or the connection changed
  end,

  delete = function(ctx, id, props)
    if not props.remove_on_destroy then
      ctx.log("info", string.format("package %s stays installed on %s (remove_on_destroy = false)",
        props.name, props.host))
      return
    end
    R.must(ctx, props, "removing package " .. props.name, PKG_SCRIPT, { props.name, "remove" },
      { privileged = true, timeout_ms = PACKAGE_TIMEOUT_MS })
  end,

  replace_on = { "host", "port", "name" },
  sensitive = { "key" },
}

-- ---------------------------------------------------------------------------
-- file

local FILE_READ = [[
# ssh-host: read file
p=$1
if [ ! -e "$p" ] && [ ! -L "$p" ]; then echo state=absent; exit 0; fi
if [ ! -f "$p" ]; then echo state=notfile; exit 0; fi
echo state=present
echo "sha256=$(sha256sum < "$p" | cut -c1-64)"
echo "stat=$(stat -c '%a %U %G' "$p")"
]]

-- Through sudo: stdin to a temp file beside the target, then rename.
local FILE_WRITE = [[
# ssh-host: write file (sudo)
set -e
p=$1 mode=$2 owner=$3 group=$4
mkdir -p "$(dirname "$p")"
t=$(mktemp "$p.XXXXXX")
trap 'rm -f "$t"' EXIT
cat > "$t"
chmod "$mode" "$t"
if [ -n "$owner" ]; then chown "$owner" "$t"; fi
if [ -n "$group" ]; then chgrp "$group" "$t"; fi
mv -f "$t" "$p"
trap - EXIT
]]

local function write_file(ctx, props)
  if props.sudo then
    R.must(ctx, props, "writing " .. props.path, FILE_WRITE,
      { props.path, props.mode, props.owner or "", props.group or "" },
      { privileged = true, stdin = props.content })
    return
  end
  local req = R.target(props, {
    path = props.path, content = props.content, mode = tonumber(props.mode, 8),
    timeout_ms = DEFAULT_TIMEOUT_MS,
  })
  local ok, err = pcall(ctx.ssh.put, req)
  if not ok and string.find(tostring(err), "no such file or directory", 1, true) then
    R.must(ctx, props, "creating the directory of " .. props.path, 'mkdir -p "$(dirname "$1")"',
      { props.path })
    ok, err = pcall(ctx.ssh.put, req)
  end
  if not ok then
    error(err, 0)
  end
  if props.owner or props.group then
    R.must(ctx, props, "chown " .. props.path,
      'if [ -n "$2" ]; then chown "$2" "$1"; fi && if [ -n "$3" ]; then chgrp "$3" "$1"; fi',
      { props.path, props.owner or "", props.group or "" })
  end
end

local function file_outputs(ctx, props)
  return { sha256 = sha256(ctx, props.content), path = props.path }
end

local file = {
  ---@param ctx table
  ---@param props table {connection..., path, content, mode, owner?, group?}
  ---@return string id, table outputs
  create = function(ctx, props)
    write_file(ctx, props)
    return props.path, file_outputs(ctx, props)
  end,

  --- The desired content when the remote sha256 matches, else a marker
  --- naming the remote hash, so the diff shows a change.
  read = R.recovering(function(ctx, id, props)
    local r = R.must(ctx, props, "reading " .. props.path, FILE_READ, { props.path },
      { privileged = true })
    local kv = R.kv(r.stdout)
    if kv.state == "absent" then
      return nil
    end
    local now = copy(props)
    if kv.state ~= "present" then
      now.content = "(not a regular file on the host)"
      return now, nil, props.path
    end
    if kv.sha256 ~= sha256(ctx, props.content) then
      now.content = "(changed on the host: sha256 " .. tostring(kv.sha256) .. ")"
    end
    local mode, owner, group = string.match(kv.stat or "", "^(%d+) (%S+) (%S+)$")
    if mode then
      now.mode = string.format("%04o", tonumber(mode, 8))
      if props.owner then
        now.owner = owner
      end
      if props.group then
        now.group = group
      end
    end
    return now, { sha256 = kv.sha256, path = props.path }, props.path
  end),

  update = function(ctx, id, old, new)
    if R.differ(old, new, { "content", "mode", "owner", "group" }) then
      write_file(ctx, new)
    end
    return file_outputs(ctx, new)
  end,

  delete = function(ctx, id, props)
    R.must(ctx, props, "removing " .. props.path, 'rm -f "$1"', { props.path },
      { privileged = true })
  end,

  replace_on = { "host", "port", "path" },
  sensitive = { "key" },
}

-- ---------------------------------------------------------------------------
-- service

-- The tag MECORCH_SERVICE=<name>:<sha256 of the command> identifies the
-- process as this service running this command.
local SVC_START = [[
# ssh-host: start service
set -e
name=$1 cmd=$2 pidfile=$3 log=$4 dir=$5
h=$(printf '%s' "$cmd" | sha256sum | cut -c1-64)
mkdir -p "$(dirname "$pidfile")"
cd "$dir"
s=
if command -v setsid >/dev/null 2>&1; then s=setsid; fi
MECORCH_SERVICE="$name:$h" nohup $s sh -c "$cmd" >>"$log" 2>&1 </dev/null &
echo $! > "$pidfile"
echo "pid=$!"
]]

local SVC_STATE = [[
# ssh-host: check service
name=$1 cmd=$2 pidfile=$3
h=$(printf '%s' "$cmd" | sha256sum | cut -c1-64)
[ -f "$pidfile" ] || { echo state=nopidfile; exit 0; }
pid=$(cat "$pidfile")
case $pid in ''|*[!0-9]*) echo state=badpidfile; exit 0;; esac
echo "pid=$pid"
[ -d "/proc/$pid" ] || { echo state=dead; exit 0; }
st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
[ "$st" = Z ] && { echo state=dead; exit 0; }
[ -r "/proc/$pid/environ" ] || { echo state=unreadable; exit 0; }
# entries are NUL-terminated and values may hold newlines (SUDO_COMMAND)
tag=$(tr '\n\0' '\001\n' < "/proc/$pid/environ" | sed -n 's/^MECORCH_SERVICE=//p' | head -n 1)
if [ "$tag" = "$name:$h" ]; then echo state=running
elif [ "${tag%%:*}" = "$name" ]; then echo state=othercommand
else echo state=dead; fi
]]

-- Stop the process the pidfile names, if it is this service (by its tag):
-- TERM to its process group, then KILL after ~5 s.
local SVC_STOP = [[
# ssh-host: stop service
name=$1 pidfile=$2
[ -f "$pidfile" ] || exit 0
pid=$(cat "$pidfile")
case $pid in ''|*[!0-9]*) rm -f "$pidfile"; exit 0;; esac
alive() {
  [ -d "/proc/$pid" ] || return 1
  [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]
}
if alive && tr '\n\0' '\001\n' < "/proc/$pid/environ" 2>/dev/null |
    grep -q "^MECORCH_SERVICE=$name:"; then
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  i=0
  while alive && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  if alive; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
fi
rm -f "$pidfile"
]]

local function svc_start(ctx, props)
  local r = R.must(ctx, props, "starting service " .. props.name, SVC_START,
    { props.name, props.command, props.pidfile, props.log, props.workdir }, { privileged = true })
  return { pid = tonumber(R.kv(r.stdout).pid) }
end

local function svc_stop(ctx, props)
  R.must(ctx, props, "stopping service " .. props.name, SVC_STOP, { props.name, props.pidfile },
    { privileged = true })
end

local service = {
  ---@param ctx table
  ---@param props table {connection..., name, command, pidfile, log, workdir, status}
  ---@return string id, table outputs
  create = function(ctx, props)
    svc_stop(ctx, props) -- a leftover of a crashed create, if any
    return props.name, svc_start(ctx, props)
  end,

  --- status "stopped" when the pid is gone, a zombie, or not this service;
  --- the command shows as changed when the live process runs another one.
  read = R.recovering(function(ctx, id, props)
    local r = R.must(ctx, props, "checking service " .. props.name, SVC_STATE,
      { props.name, props.command, props.pidfile }, { privileged = true })
    local kv = R.kv(r.stdout)
    if id == nil and kv.state ~= "running" then
      return nil -- recovery: the create did not get as far as a live process
    end
    local now = copy(props)
    if kv.state == "othercommand" then
      now.command = "(running another command)"
    elseif kv.state == "unreadable" then
      ctx.log("warn", string.format("service %s on %s: pid %s belongs to another user; "
        .. "cannot check its command (set sudo = true)", props.name, props.host, tostring(kv.pid)))
    elseif kv.state ~= "running" then
      now.status = "stopped"
    end
    return now, { pid = tonumber(kv.pid) }, props.name
  end),

  update = function(ctx, id, old, new)
    if not R.differ(old, new, { "command", "pidfile", "log", "workdir", "status" }) then
      return nil -- only the connection changed: keep the process
    end
    svc_stop(ctx, old)
    if old.pidfile ~= new.pidfile then
      svc_stop(ctx, new)
    end
    return svc_start(ctx, new)
  end,

  delete = function(ctx, id, props)
    svc_stop(ctx, props)
  end,

  replace_on = { "host", "port", "name" },
  sensitive = { "key" },
}

-- ---------------------------------------------------------------------------
-- user

local USER_READ = [[
# ssh-host: look up user
getent passwd "$1" 2>/dev/null || grep "^$1:" /etc/passwd || echo state=absent
]]

local USER_CREATE = [[
# ssh-host: add user
set -e
name=$1 shell=$2 home=$3 uid=$4 comment=$5 mkhome=$6
if getent passwd "$name" >/dev/null 2>&1 || grep -q "^$name:" /etc/passwd; then
  echo "user $name already exists on this host (adopt it with mecorch import)" >&2; exit 3
fi
if command -v useradd >/dev/null 2>&1; then
  set -- -s "$shell" -d "$home"
  if [ -n "$uid" ]; then set -- "$@" -u "$uid"; fi
  if [ -n "$comment" ]; then set -- "$@" -c "$comment"; fi
  if [ "$mkhome" = 1 ]; then set -- "$@" -m; else set -- "$@" -M; fi
  useradd "$@" "$name"
else
  set -- -D -s "$shell" -h "$home"
  if [ -n "$uid" ]; then set -- "$@" -u "$uid"; fi
  if [ -n "$comment" ]; then set -- "$@" -g "$comment"; fi
  if [ "$mkhome" != 1 ]; then set -- "$@" -H; fi
  adduser "$@" "$name"
fi
]]

local USER_UPDATE = [[
# ssh-host: change user
set -e
name=$1 shell=$2 home=$3 uid=$4 comment=$5
set -- -s "$shell" -d "$home"
if [ -n "$uid" ]; then set -- "$@" -u "$uid"; fi
if [ -n "$comment" ]; then set -- "$@" -c "$comment"; fi
usermod "$@" "$name"
]]

local USER_DELETE = [[
# ssh-host: remove user
if ! getent passwd "$1" >/dev/null 2>&1 && ! grep -q "^$1:" /etc/passwd; then exit 0; fi
if command -v userdel >/dev/null 2>&1; then userdel "$1"; else deluser "$1"; fi
]]

-- The passwd entry of props.name as {uid, gid, gecos, home, shell}, or nil.
local function user_lookup(ctx, props)
  local r = R.must(ctx, props, "looking up user " .. props.name, USER_READ, { props.name })
  local line = string.match(r.stdout, "[^\n]+") or ""
  if line == "state=absent" then
    return nil
  end
  local name, uid, gid, gecos, home, shell =
    string.match(line, "^([^:]*):[^:]*:(%d+):(%d+):([^:]*):([^:]*):([^:]*)$")
  if name ~= props.name then
    error(string.format("cannot parse the passwd entry of %s on %s: %q", props.name,
      R.where(props), line), 0)
  end
  return { uid = tonumber(uid), gid = tonumber(gid), gecos = gecos, home = home, shell = shell }
end

local function user_args(props)
  return { props.name, props.shell, props.home, props.uid or "", props.comment or "",
    props.create_home and "1" or "0" }
end

local user = {
  ---@param ctx table
  ---@param props table {connection..., name, shell, home, uid?, comment?, create_home}
  ---@return string id, table outputs
  create = function(ctx, props)
    R.must(ctx, props, "adding user " .. props.name, USER_CREATE, user_args(props),
      { privileged = true })
    local pw = user_lookup(ctx, props)
    if not pw then
      error(string.format("user %s is missing on %s right after it was added", props.name,
        R.where(props)), 0)
    end
    return props.name, { uid = pw.uid, gid = pw.gid }
  end,

  read = R.recovering(function(ctx, id, props)
    local pw = user_lookup(ctx, props)
    if not pw then
      return nil
    end
    local now = copy(props)
    now.shell = pw.shell
    now.home = pw.home
    if props.uid ~= nil then
      now.uid = pw.uid
    end
    if props.comment ~= nil then
      now.comment = pw.gecos
    end
    return now, { uid = pw.uid, gid = pw.gid }, props.name
  end),

  update = function(ctx, id, old, new)
    if R.differ(old, new, { "shell", "home", "uid", "comment" }) then
      R.must(ctx, new, "changing user " .. new.name, USER_UPDATE, user_args(new),
        { privileged = true })
    end
    return nil
  end,

  delete = function(ctx, id, props)
    R.must(ctx, props, "removing user " .. props.name, USER_DELETE, { props.name },
      { privileged = true })
  end,

  replace_on = { "host", "port", "name" },
  sensitive = { "key" },
}

-- ---------------------------------------------------------------------------
-- declare

local NAME_PAT = "^[%w][%w_.%-]*$"

local function check_name(kind, name)
  if type(name) ~= "string" or not string.find(name, NAME_PAT) or #name > 64 then
    error(string.format("%s %q: use letters, digits, '_', '.', '-' (at most 64, starting "
      .. "with a letter or digit)", kind, tostring(name)), 0)
  end
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t or {}) do
    ks[#ks + 1] = k
  end
  table.sort(ks)
  return ks
end

local function connection(inputs)
  if inputs.key == nil and inputs.key_file == nil then
    error("give `key_file` or `key` (the private key's text, a sensitive input)", 0)
  end
  if inputs.key ~= nil and inputs.key_file ~= nil then
    error("`key` and `key_file` are exclusive", 0)
  end
  if inputs.host_key_sha256 ~= nil and inputs.known_hosts ~= nil then
    error("`host_key_sha256` and `known_hosts` are exclusive", 0)
  end
  return {
    host = inputs.host, port = inputs.port or 22, user = inputs.user,
    key_file = inputs.key_file, key = inputs.key,
    host_key_sha256 = inputs.host_key_sha256, known_hosts = inputs.known_hosts,
    sudo = inputs.sudo or false,
  }
end

local function with(conn, fields)
  local p = copy(conn)
  for k, v in pairs(fields) do
    p[k] = v
  end
  return p
end

return {
  name = "bare-metal/ssh-host",
  version = "1.0.0",

  inputs = {
    host = { type = "string", description = "address or name of the host's sshd" },
    port = { type = "integer", default = 22, description = "sshd port" },
    user = { type = "string", description = "login user" },
    key_file = { type = "string?", description = "private key file (on the machine running mecorch)" },
    key = { type = "string?", sensitive = true, description = "private key text (PEM / OpenSSH)" },
    host_key_sha256 = { type = "string?",
      description = "pinned host key fingerprint, SHA256:... as `ssh-keygen -l -E sha256` prints it" },
    known_hosts = { type = "string?", description = "known_hosts file to check the host key against" },
    sudo = { type = "boolean", default = false,
      description = "run privileged commands (packages, users, root-owned files) through sudo -n" },
    packages = { type = "list", default = {}, description = "package names to install" },
    remove_packages_on_destroy = { type = "boolean", default = false,
      description = "destroy removes the packages (default: they stay installed)" },
    files = { type = "map", default = {},
      description = "name -> {path, content, mode = \"0644\", owner?, group?}" },
    services = { type = "map", default = {},
      description = "name -> {command, pidfile?, log?, workdir?}" },
    users = { type = "map", default = {},
      description = "name -> {shell?, home?, uid?, comment?, create_home?}" },
  },

  resources = {
    package = pkg,
    file = file,
    service = service,
    user = user,
  },

  ---@param inputs table
  ---@param m table the declaration API: m.resource, m.output
  declare = function(inputs, m)
    local conn = connection(inputs)

    local versions = {}
    for _, name in ipairs(inputs.packages or {}) do
      if type(name) ~= "string" or not string.find(name, "^[%w][%w+._:%-]*$") then
        error(string.format("packages: %q is not a package name", tostring(name)), 0)
      end
      local h = m.resource("package", name, with(conn, {
        name = name, remove_on_destroy = inputs.remove_packages_on_destroy or false,
      }))
      versions[name] = h.version
    end

    local paths = {}
    for _, name in ipairs(sorted_keys(inputs.files)) do
      local f = inputs.files[name]
      check_name("files", name)
      if type(f) ~= "table" then
        error(string.format("files.%s: want {path, content, mode}", name), 0)
      end
      if type(f.path) ~= "string" or string.sub(f.path, 1, 1) ~= "/" then
        error(string.format("files.%s: path must be absolute", name), 0)
      end
      -- a string, or a reference known after apply
      if type(f.content) ~= "string" and type(f.content) ~= "userdata" then
        error(string.format("files.%s: content must be a string", name), 0)
      end
      local h = m.resource("file", name, with(conn, {
        path = f.path, content = f.content,
        mode = mode_string(f.mode or "0644", "files." .. name),
        owner = f.owner, group = f.group,
      }))
      paths[name] = h.path
    end

    local pids = {}
    for _, name in ipairs(sorted_keys(inputs.services)) do
      local s = inputs.services[name]
      check_name("services", name)
      if type(s) ~= "table" or type(s.command) ~= "string" or s.command == "" then
        error(string.format("services.%s: want {command = \"...\"}", name), 0)
      end
      local h = m.resource("service", name, with(conn, {
        name = name, command = s.command,
        pidfile = s.pidfile or ("/var/tmp/mecorch-" .. name .. ".pid"),
        log = s.log or "/dev/null",
        workdir = s.workdir or "/",
        status = "running",
      }))
      pids[name] = h.pid
    end

    local uids = {}
    for _, name in ipairs(sorted_keys(inputs.users)) do
      local u = inputs.users[name]
      check_name("users", name)
      if type(u) ~= "table" then
        error(string.format("users.%s: want a map ({} for the defaults)", name), 0)
      end
      local h = m.resource("user", name, with(conn, {
        name = name, shell = u.shell or "/bin/sh", home = u.home or ("/home/" .. name),
        uid = u.uid, comment = u.comment, create_home = u.create_home or false,
      }))
      uids[name] = h.uid
    end

    m.output("packages", versions)
    m.output("files", paths)
    m.output("services", pids)
    m.output("users", uids)
  end,
}
