# shellcheck shell=bash disable=SC2034  # globals are used by the sourcing test scripts
# Local servers for the URL tests (sourced after lib.sh, never run):
# nginx (HTTP and HTTPS), OpenSSH's sshd and an FTP server (pyftpdlib), each
# on 127.0.0.1 and a free port, with every file under $T and every process
# registered for the clean-up in lib.sh. A server that cannot start here skips the test (125).

# free_port: print a TCP port on 127.0.0.1 that nobody listens on now.
free_port() {
  local i p
  for ((i = 0; i < 50; i++)); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      printf '%s\n' "$p"
      return 0
    fi
  done
  fail "no free port found in 50 tries"
}

# wait_port PORT SECS PID: wait until something accepts on 127.0.0.1:PORT.
wait_port() {
  local port=$1 secs=$2 pid=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    is_running "$pid" || return 1
    sleep 0.1
  done
  return 1
}

# make_cert DIR: a self-signed certificate for 127.0.0.1 (DIR/cert.pem, DIR/key.pem).
make_cert() {
  local d=$1
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" -keyout "$d/key.pem" -out "$d/cert.pem" >/dev/null 2>&1 ||
    skip "openssl could not make a self-signed certificate"
}

# nginx_conf_head DIR: the start of an nginx.conf for a test's own nginx:
# one process in the foreground, its pid, log and temp files under DIR, up
# to and including the opening of the http block.
nginx_conf_head() {
  cat <<CONF
user root;
worker_processes 1;
daemon off;
master_process off;
pid $1/nginx.pid;
error_log $1/error.log;
events { worker_connections 512; }
http {
  client_body_temp_path $1/tmp/body;
  proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi;
  scgi_temp_path $1/tmp/scgi;
CONF
}

# start_nginx RATE: nginx serving $WWW on NGINX_PORT (HTTP) and NGINX_TLS_PORT
# (HTTPS, certificate $T/tls/cert.pem). Locations:
#   /f/NAME       plain static files (ranges honoured)
#   /slow/NAME    the same, each connection limited to RATE bytes/s
#   /norange/NAME max_ranges 0: a Range request gets the whole file (200)
#   /slownorange/NAME  both
#   /auth/NAME    basic authentication: alice / $NGINX_PASSWORD
# The access log ($NGINX_LOG) has one line per request:
#   METHOD URI range="BYTES=..." status=CODE body=BYTES
NGINX_PORT="" NGINX_TLS_PORT="" NGINX_LOG="" WWW="" NGINX_PID="" NGINX_PASSWORD="s3cret-Pw-42"
start_nginx() {
  local rate=$1 dir="$T/nginx" try
  command -v nginx >/dev/null 2>&1 || skip "nginx not installed (apt-get install nginx-light)"
  WWW="$T/www"
  mkdir -p "$dir/tmp" "$WWW"
  NGINX_LOG="$dir/access.log"
  make_cert "$T/tls"
  # /auth/ wants user alice, password $NGINX_PASSWORD.
  printf 'alice:%s\n' "$(openssl passwd -apr1 "$NGINX_PASSWORD")" >"$dir/htpasswd"
  for ((try = 0; try < 5; try++)); do
    NGINX_PORT=$(free_port)
    NGINX_TLS_PORT=$(free_port)
    { nginx_conf_head "$dir"; cat <<CONF
  default_type application/octet-stream;
  log_format ranges '\$request_method \$uri range="\$http_range" status=\$status body=\$body_bytes_sent';
  access_log $NGINX_LOG ranges;
  sendfile on;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    listen 127.0.0.1:$NGINX_TLS_PORT ssl;
    ssl_certificate $T/tls/cert.pem;
    ssl_certificate_key $T/tls/key.pem;
    location /f/ { alias $WWW/; }
    location /slow/ { alias $WWW/; limit_rate $rate; }
    location /norange/ { alias $WWW/; max_ranges 0; }
    location /slownorange/ { alias $WWW/; max_ranges 0; limit_rate $rate; }
    location /auth/ { alias $WWW/; auth_basic sesscp; auth_basic_user_file $dir/htpasswd; }
  }
}
CONF
    } >"$dir/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf" 2>"$dir/stderr.log" &
    NGINX_PID=$!
    register "$NGINX_PID"
    if wait_port "$NGINX_PORT" 10 "$NGINX_PID" && wait_port "$NGINX_TLS_PORT" 5 "$NGINX_PID"; then
      log "nginx pid $NGINX_PID on 127.0.0.1:$NGINX_PORT (http) and :$NGINX_TLS_PORT (https), rate limit $rate"
      return 0
    fi
    kill9 "$NGINX_PID"
  done
  show_log "$dir/stderr.log" "nginx stderr"
  show_log "$dir/error.log" "nginx error.log"
  skip "nginx could not be started here"
}

# stop_nginx: kill nginx (a server crash, as the client sees it).
stop_nginx() { kill9 "$NGINX_PID"; }

# restart_nginx: start nginx again with the same configuration and ports.
restart_nginx() {
  local dir="$T/nginx" i
  for ((i = 0; i < 20; i++)); do
    nginx -p "$dir" -c "$dir/nginx.conf" 2>>"$dir/stderr.log" &
    NGINX_PID=$!
    register "$NGINX_PID"
    wait_port "$NGINX_PORT" 5 "$NGINX_PID" && return 0
    kill9 "$NGINX_PID"
    sleep 0.5
  done
  fail "nginx did not come back on port $NGINX_PORT"
}

# log_mark: the current number of access-log lines (requests so far).
log_mark() { if [[ -f $NGINX_LOG ]]; then wc -l <"$NGINX_LOG"; else echo 0; fi; }

# log_since MARK: the access-log lines after MARK.
log_since() { tail -n +$(($1 + 1)) "$NGINX_LOG"; }

# body_bytes_since MARK [URI-PREFIX]: body bytes nginx sent for GETs after MARK.
body_bytes_since() {
  log_since "$1" | awk -v p="${2:-}" '$1 == "GET" && index($2, p) == 1 { sub("body=", "", $NF); s += $NF } END { printf "%.0f\n", s }'
}

# range_starts_since MARK: the first byte of each GET's Range after MARK (- for none).
range_starts_since() {
  log_since "$1" | awk '$1 == "GET" { if (match($0, /range="bytes=[0-9]+/)) print substr($0, RSTART + 13, RLENGTH - 13); else print "-" }'
}

# run_get LOG ARGS...: run `sesscp get ARGS...` in the foreground (bounded by
# SESSCP_RUN_TIMEOUT) and set GET_RC.
GET_RC=0
run_get() {
  local logf=$1
  shift
  GET_RC=0
  timeout -k 5 "$SESSCP_RUN_TIMEOUT" "$BIN" get "$@" 2>"$logf" || GET_RC=$?
  if [[ $GET_RC -eq 124 || $GET_RC -eq 137 ]]; then
    fail_with_logs "sesscp get did not finish within ${SESSCP_RUN_TIMEOUT}s" "$logf"
  fi
}

# start_get LOG ARGS...: start `sesscp get ARGS...` in the background; sets GET_PID.
GET_PID=""
start_get() {
  local logf=$1
  shift
  "$BIN" get "$@" 2>"$logf" &
  GET_PID=$!
  register "$GET_PID"
}

# journal_chunks JOURNAL: the number of chunks a journal confirms (0 if none),
# read with `sesscp`-independent tools: checkpoint records are type 2 and
# carry a u32 count at payload offset 16.
journal_chunks() {
  local j=$1
  [[ -s $j ]] || { echo 0; return; }
  od -An -v -tu1 "$j" | tr -s ' ' '\n' | awk 'NF' | awk '
    { b[n++] = $1 }
    END {
      o = 10; total = 0
      while (o + 13 <= n) {
        len = b[o+8]*16777216 + b[o+9]*65536 + b[o+10]*256 + b[o+11]; type = b[o+12]
        if (o + 13 + len > n) break
        if (type == 2) { p = o + 13 + 16; total += b[p]*16777216 + b[p+1]*65536 + b[p+2]*256 + b[p+3] }
        o += 13 + len
      }
      print total
    }'
}

# start_sshd: OpenSSH's sshd as root on 127.0.0.1:SSHD_PORT (-D, a config of
# our own, no PAM, public keys only) with a new host key, plus a client key
# ($SSH_KEY) in its authorized keys and a known_hosts file ($KNOWN_HOSTS)
# that trusts the host key. SFTP_BASE is the sftp:// URL of $T.
SSHD_PORT="" SSH_KEY="" KNOWN_HOSTS="" SFTP_BASE="" SSHD_PID=""
start_sshd() {
  local dir="$T/ssh" sshd=/usr/sbin/sshd try
  [[ -x $sshd ]] || skip "sshd not installed (apt-get install openssh-server)"
  command -v ssh-keygen >/dev/null 2>&1 || skip "ssh-keygen not installed (apt-get install openssh-client)"
  [[ $(id -u) -eq 0 ]] || skip "sshd must start as root to log users in"
  mkdir -p "$dir"
  # Privilege separation needs this directory (the package makes it at boot).
  mkdir -p /run/sshd && chmod 0755 /run/sshd
  ssh-keygen -q -t ed25519 -N '' -C sesscp-test-host -f "$dir/host_key" || skip "ssh-keygen failed"
  ssh-keygen -q -t ed25519 -N '' -C sesscp-test-client -f "$dir/client_key" || skip "ssh-keygen failed"
  cp "$dir/client_key.pub" "$dir/authorized_keys"
  SSH_KEY="$dir/client_key"
  KNOWN_HOSTS="$dir/known_hosts"
  for ((try = 0; try < 5; try++)); do
    SSHD_PORT=$(free_port)
    cat >"$dir/sshd_config" <<CONF
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
Subsystem sftp internal-sftp
LogLevel VERBOSE
CONF
    "$sshd" -D -e -f "$dir/sshd_config" -o "MaxStartups=50" 2>"$dir/sshd.log" &
    SSHD_PID=$!
    register "$SSHD_PID"
    if wait_port "$SSHD_PORT" 10 "$SSHD_PID"; then
      printf '[127.0.0.1]:%s %s\n' "$SSHD_PORT" "$(cut -d' ' -f1,2 "$dir/host_key.pub")" >"$KNOWN_HOSTS"
      SFTP_BASE="sftp://root@127.0.0.1:$SSHD_PORT$T"
      log "sshd pid $SSHD_PID on 127.0.0.1:$SSHD_PORT"
      return 0
    fi
    kill9 "$SSHD_PID"
  done
  show_log "$dir/sshd.log" "sshd log"
  skip "sshd could not be started here"
}

# kill_sshd_sessions: kill -9 the session processes of our sshd (its
# children and their children), not the listener: every SSH connection
# breaks, as when a server drops its clients.
kill_sshd_sessions() {
  local pid child grandchild n=0
  for child in $(pgrep -P "$SSHD_PID" || true); do
    for grandchild in $(pgrep -P "$child" || true); do
      kill -9 "$grandchild" 2>/dev/null && n=$((n + 1))
    done
    kill -9 "$child" 2>/dev/null && n=$((n + 1))
  done
  log "killed $n sshd session processes"
}

# start_ftpd RATE [ARGS...]: an FTP server (tests/integration/ftpd.py, on
# pyftpdlib from python3-pyftpdlib) on 127.0.0.1:FTPD_PORT, its passive data
# ports on 127.0.0.1 too, serving $FTP_ROOT to user $FTP_USER with password
# $FTP_PASSWORD; each data connection is limited to RATE bytes/s (0: no
# limit). ARGS go to ftpd.py (e.g. --no-rest). FTP_BASE is the ftp:// URL of
# $FTP_ROOT without credentials (give them with SESSCP_URL_PASSWORD).
# $FTPD_LOG gets one line per LOGIN, SIZE, MDTM, REST, RETR (with its restart
# offset) and SENT (bytes per data connection); see ftpd.py.
FTPD_PORT="" FTPD_LOG="" FTPD_PID="" FTP_ROOT="" FTP_BASE="" FTP_USER="alice" FTP_PASSWORD="ftp-Pw-7q93zK"
start_ftpd() {
  local rate=$1 dir="$T/ftpd" py="" cand i
  shift
  for cand in /usr/bin/python3 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import pyftpdlib' 2>/dev/null; then
      py=$cand
      break
    fi
  done
  [[ -n $py ]] || skip "pyftpdlib not installed (apt-get install python3-pyftpdlib)"
  FTP_ROOT="$T/ftp"
  FTPD_LOG="$dir/events.log"
  mkdir -p "$dir" "$FTP_ROOT"
  printf '%s\n' "$FTP_PASSWORD" >"$dir/password"
  rm -f "$dir/port"
  : >"$FTPD_LOG"
  "$py" "$(dirname "${BASH_SOURCE[0]}")/ftpd.py" --root "$FTP_ROOT" --user "$FTP_USER" \
    --password-file "$dir/password" --port-file "$dir/port" --log "$FTPD_LOG" --rate "$rate" "$@" \
    2>"$dir/stderr.log" &
  FTPD_PID=$!
  register "$FTPD_PID"
  FTPD_PORT=""
  for ((i = 0; i < 200; i++)); do
    if [[ -s $dir/port ]]; then
      FTPD_PORT=$(<"$dir/port")
      break
    fi
    is_running "$FTPD_PID" || break
    sleep 0.05
  done
  if [[ -z $FTPD_PORT ]] || ! wait_port "$FTPD_PORT" 10 "$FTPD_PID"; then
    show_log "$dir/stderr.log" "ftpd stderr"
    skip "the FTP server (pyftpdlib) could not be started here"
  fi
  FTP_BASE="ftp://$FTP_USER@127.0.0.1:$FTPD_PORT"
  log "ftpd pid $FTPD_PID on 127.0.0.1:$FTPD_PORT (pyftpdlib, $py), root $FTP_ROOT, rate limit $rate B/s per data connection"
}

# ftpd_mark: the current number of ftpd event lines.
ftpd_mark() { wc -l <"$FTPD_LOG"; }

# ftpd_since MARK: the ftpd event lines after MARK.
ftpd_since() { tail -n +$(($1 + 1)) "$FTPD_LOG"; }

# run_send_url LOG ARGS...: `sesscp send ARGS...` in the foreground; sets SEND_RC.
run_send_url() {
  local logf=$1
  shift
  SEND_RC=0
  timeout -k 5 "$SESSCP_RUN_TIMEOUT" "$BIN" send "$@" 2>"$logf" || SEND_RC=$?
  if [[ $SEND_RC -eq 124 || $SEND_RC -eq 137 ]]; then
    fail_with_logs "sesscp send did not finish within ${SESSCP_RUN_TIMEOUT}s" "$logf"
  fi
}
