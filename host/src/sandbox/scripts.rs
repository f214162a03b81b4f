//! POSIX `sh` snippets run inside containers.
//!
//! They use only shell builtins and `/proc`, so they work in any Linux image
//! with `/bin/sh` (no procps, coreutils or util-linux assumed). Commands and
//! other caller data reach them through environment variables, never by
//! splicing text into the script, so no quoting can break out.

/// Shell functions shared by the scripts below.
///
/// - `proc_state PID` prints `STATE STARTTIME` from `/proc/PID/stat` (the
///   command name is skipped by cutting at the last `) `, since it may hold
///   spaces or parentheses). Fails when the process is gone.
/// - `alive PID START` succeeds when PID is a live (non-zombie) process that
///   started at START (clock ticks after boot), so a reused pid never counts.
/// - `tree PID` prints PID and all its descendants, space-separated.
/// - `signal_tree SIG PID`: stops the whole tree first (so nothing in it can
///   fork new children meanwhile), picking up children forked before the stop,
///   then sends SIG to everything, then lets it continue.
const LIB: &str = r#"
proc_state() {
  read -r _l < "/proc/$1/stat" 2>/dev/null || return 1
  _r=${_l##*) }
  set -- $_r
  echo "$1 ${20}"
}
alive() {
  _s=$(proc_state "$1") || return 1
  set -- $_s "$2"
  [ "$1" != Z ] && [ "$1" != X ] && [ "$2" = "$3" ]
}
tree() {
  _table=$(for _f in /proc/[0-9]*/stat; do
    read -r _l < "$_f" 2>/dev/null || continue
    _r=${_l##*) }; set -- $_r; _p=${_f#/proc/}; echo "${_p%/stat} $2"
  done)
  _tree=" $1 "; _changed=1
  while [ "$_changed" = 1 ]; do
    _changed=0
    while read -r _p _pp; do
      case "$_tree" in *" $_pp "*) case "$_tree" in *" $_p "*) ;; *) _tree="$_tree$_p "; _changed=1 ;; esac ;; esac
    done <<EOF
$_table
EOF
  done
  echo $_tree
}
signal_tree() {
  _all=""
  for _round in 1 2 3; do
    _t=$(tree "$2")
    kill -STOP $_t 2>/dev/null
    [ "$_t" = "$_all" ] && break
    _all=$_t
  done
  kill -"$1" $_all 2>/dev/null
  kill -CONT $_all 2>/dev/null
  return 0
}
"#;

/// Runs `$CROGIA_CMD` with `sh -c`, first writing the wrapper's pid on a line
/// of its own to stderr so a timeout can kill the command's whole tree.
/// Starts `$CROGIA_CMD` in the background with stdout and stderr in
/// `.agent_logs/$CROGIA_PROC_ID.log` and its exit code written to
/// `.agent_logs/$CROGIA_PROC_ID.exit` when it ends. Prints `PID STARTTIME`.
pub fn start_process() -> String {
    format!(
        r#"{LIB}
_c=$CROGIA_CMD; _id=$CROGIA_PROC_ID; unset CROGIA_CMD CROGIA_PROC_ID
mkdir -p .agent_logs || exit 1
(
  sh -c "$_c" > ".agent_logs/$_id.log" 2>&1 < /dev/null &
  _pid=$!
  _s=$(proc_state "$_pid") || _s="X 0"
  echo "$_pid ${{_s#* }}"
  exec > /dev/null 2> /dev/null
  wait "$_pid"
  echo "$?" > ".agent_logs/$_id.exit"
) &
"#
    )
}

/// Reads lines `ID PID STARTTIME` from `$CROGIA_PROCS` and prints, for each,
/// `ID running` or `ID exited CODE` (`CODE` is `-` when unknown).
pub fn process_status() -> String {
    format!(
        r#"{LIB}
while read -r _id _pid _st; do
  [ -n "$_id" ] || continue
  if alive "$_pid" "$_st"; then echo "$_id running"; continue; fi
  _code=-
  [ -f ".agent_logs/$_id.exit" ] && read -r _code < ".agent_logs/$_id.exit"
  echo "$_id exited ${{_code:--}}"
done <<EOF
$CROGIA_PROCS
EOF
"#
    )
}

/// Stops `$CROGIA_PID` (started at `$CROGIA_START`) and its descendants:
/// SIGTERM, then SIGKILL after `$CROGIA_GRACE_TENTHS` tenths of a second.
/// Once it is gone, waits (a second at most) for its wrapper to record the
/// exit code in `.agent_logs/$CROGIA_PROC_ID.exit`, so a status read right
/// after the stop has it. Prints `not-running`, `terminated` or `killed`.
pub fn stop_process() -> String {
    format!(
        r#"{LIB}
_settle() {{
  _j=0
  while [ ! -f ".agent_logs/$CROGIA_PROC_ID.exit" ] && [ "$_j" -lt 20 ]; do
    sleep 0.05 2>/dev/null || break
    _j=$((_j + 1))
  done
}}
_pid=$CROGIA_PID; _st=$CROGIA_START
if ! alive "$_pid" "$_st"; then echo not-running; exit 0; fi
_victims=$(tree "$_pid")
kill -TERM $_victims 2>/dev/null
_i=0
while [ "$_i" -lt "$CROGIA_GRACE_TENTHS" ]; do
  _any=0
  for _v in $_victims; do
    _s=$(proc_state "$_v") && [ "${{_s%% *}}" != Z ] && {{ _any=1; break; }}
  done
  [ "$_any" = 0 ] && {{ _settle; echo terminated; exit 0; }}
  sleep 0.1 2>/dev/null || sleep 1
  _i=$((_i + 1))
done
for _v in $_victims; do signal_tree KILL "$_v"; done
_settle
echo killed
"#
    )
}
