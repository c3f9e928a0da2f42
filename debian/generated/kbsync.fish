# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_kbsync_global_optspecs
    string join \n c/config= reconcile n/dry-run allow-deletes checksum no-audit q/quiet v/verbose progress-secs= json job= log= log-file= log-format= h/help V/version
end

function __fish_kbsync_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_kbsync_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_kbsync_using_subcommand
    set -l cmd (__fish_kbsync_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c kbsync -n "__fish_kbsync_needs_command" -s c -l config -d 'Configuration file (TOML)' -r -F
complete -c kbsync -n "__fish_kbsync_needs_command" -l progress-secs -d 'With --reconcile, off a terminal: seconds between progress lines' -r
complete -c kbsync -n "__fish_kbsync_needs_command" -l job -d 'Only run these jobs (repeatable)' -r
complete -c kbsync -n "__fish_kbsync_needs_command" -l log -d 'Log filter, e.g. `debug` or `kbsync=trace`: wins over -v, -q and RUST_LOG' -r
complete -c kbsync -n "__fish_kbsync_needs_command" -l log-file -d 'Append the log to this file instead of writing it to stderr (in --log-format; `auto` is plain text there)' -r -F
complete -c kbsync -n "__fish_kbsync_needs_command" -l log-format -d 'Log format' -r -f -a "auto\t'journald when stderr is the journal, colours on a terminal, plain text otherwise'
human\t''
plain\t''
journald\t''
json\t''"
complete -c kbsync -n "__fish_kbsync_needs_command" -l reconcile -d 'Run one full pass over every job, push the changes and exit. The exit code is 0 only when everything converged. Ctrl-C starts no new upstream call, lets those under way finish, prints the summary and exits 130; a second Ctrl-C abandons them'
complete -c kbsync -n "__fish_kbsync_needs_command" -s n -l dry-run -d 'Print the plan without sending anything upstream or writing the state file. Implies a single pass; with --reconcile, shows what that pass would do'
complete -c kbsync -n "__fish_kbsync_needs_command" -l allow-deletes -d 'With --reconcile: retire (delete, disable, archive) whatever the plan retires, beyond the delete guard (`max_delete`)'
complete -c kbsync -n "__fish_kbsync_needs_command" -l checksum -d 'With --reconcile or --dry-run: read every file, trusting no recorded size, mtime or settled flag (a deep verify)'
complete -c kbsync -n "__fish_kbsync_needs_command" -l no-audit -d 'With --reconcile: skip the upstream audit (listing what the knowledge base holds and repairing drift)'
complete -c kbsync -n "__fish_kbsync_needs_command" -s q -l quiet -d 'Log warnings and errors only, and show no progress (with --reconcile: a bar on a terminal, else a line every --progress-secs)'
complete -c kbsync -n "__fish_kbsync_needs_command" -s v -l verbose -d 'Log more: -v debug, -vv trace (kbsync\'s own events). --log, when given, wins; else -v/-q win over RUST_LOG'
complete -c kbsync -n "__fish_kbsync_needs_command" -l json -d 'With --dry-run: print the plan as JSON. With --reconcile: print the summary and each item\'s result as JSON (progress and logs stay on stderr)'
complete -c kbsync -n "__fish_kbsync_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kbsync -n "__fish_kbsync_needs_command" -s V -l version -d 'Print version'
complete -c kbsync -n "__fish_kbsync_needs_command" -f -a "status" -d 'Per job: items tracked, pending and failed (with reasons), last sync, and a root that is missing or looks unmounted. Reads the state file; safe while the service runs'
complete -c kbsync -n "__fish_kbsync_needs_command" -f -a "check" -d 'Compare the knowledge base with the source and the state file: print every difference (drift found by the upstream audit, and what a pass would do). Changes nothing; exits 1 when there is any, or when a job\'s root is missing: its upstream is still compared with the state file, but nothing vouches for its source'
complete -c kbsync -n "__fish_kbsync_needs_command" -f -a "retry" -d 'Try again now what failed: steps the upstream refused (parked until the file changes) and steps waiting out a backoff. Safe while the service runs; it picks them up within seconds'
complete -c kbsync -n "__fish_kbsync_needs_command" -f -a "completions" -d 'Print a shell completion script: `kbsync completions bash > /usr/share/bash-completion/completions/kbsync`'
complete -c kbsync -n "__fish_kbsync_needs_command" -f -a "man" -d 'Print the manual page (roff): `kbsync man > /usr/share/man/man1/kbsync.1`'
complete -c kbsync -n "__fish_kbsync_needs_command" -f -a "forget" -d 'Drop from the state file every row of the jobs named with `--job`, which must be gone from the configuration. Their upstream records stay as they are. Needs the state file to itself (stop the service first)'
complete -c kbsync -n "__fish_kbsync_needs_command" -f -a "config" -d 'Work with the configuration file'
complete -c kbsync -n "__fish_kbsync_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kbsync -n "__fish_kbsync_using_subcommand status" -s c -l config -d 'Configuration file (TOML)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand status" -l job -d 'Only run these jobs (repeatable)' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand status" -l log -d 'Log filter, e.g. `debug` or `kbsync=trace`: wins over -v, -q and RUST_LOG' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand status" -l log-file -d 'Append the log to this file instead of writing it to stderr (in --log-format; `auto` is plain text there)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand status" -l log-format -d 'Log format' -r -f -a "auto\t'journald when stderr is the journal, colours on a terminal, plain text otherwise'
human\t''
plain\t''
journald\t''
json\t''"
complete -c kbsync -n "__fish_kbsync_using_subcommand status" -l json -d 'Print JSON instead of text'
complete -c kbsync -n "__fish_kbsync_using_subcommand status" -s q -l quiet -d 'Log warnings and errors only, and show no progress (with --reconcile: a bar on a terminal, else a line every --progress-secs)'
complete -c kbsync -n "__fish_kbsync_using_subcommand status" -s v -l verbose -d 'Log more: -v debug, -vv trace (kbsync\'s own events). --log, when given, wins; else -v/-q win over RUST_LOG'
complete -c kbsync -n "__fish_kbsync_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kbsync -n "__fish_kbsync_using_subcommand check" -s c -l config -d 'Configuration file (TOML)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand check" -l job -d 'Only run these jobs (repeatable)' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand check" -l log -d 'Log filter, e.g. `debug` or `kbsync=trace`: wins over -v, -q and RUST_LOG' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand check" -l log-file -d 'Append the log to this file instead of writing it to stderr (in --log-format; `auto` is plain text there)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand check" -l log-format -d 'Log format' -r -f -a "auto\t'journald when stderr is the journal, colours on a terminal, plain text otherwise'
human\t''
plain\t''
journald\t''
json\t''"
complete -c kbsync -n "__fish_kbsync_using_subcommand check" -l json -d 'Print JSON instead of text'
complete -c kbsync -n "__fish_kbsync_using_subcommand check" -s q -l quiet -d 'Log warnings and errors only, and show no progress (with --reconcile: a bar on a terminal, else a line every --progress-secs)'
complete -c kbsync -n "__fish_kbsync_using_subcommand check" -s v -l verbose -d 'Log more: -v debug, -vv trace (kbsync\'s own events). --log, when given, wins; else -v/-q win over RUST_LOG'
complete -c kbsync -n "__fish_kbsync_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kbsync -n "__fish_kbsync_using_subcommand retry" -s c -l config -d 'Configuration file (TOML)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand retry" -l job -d 'Only run these jobs (repeatable)' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand retry" -l log -d 'Log filter, e.g. `debug` or `kbsync=trace`: wins over -v, -q and RUST_LOG' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand retry" -l log-file -d 'Append the log to this file instead of writing it to stderr (in --log-format; `auto` is plain text there)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand retry" -l log-format -d 'Log format' -r -f -a "auto\t'journald when stderr is the journal, colours on a terminal, plain text otherwise'
human\t''
plain\t''
journald\t''
json\t''"
complete -c kbsync -n "__fish_kbsync_using_subcommand retry" -l allow-deletes -d 'Also let the next full pass of each job retire beyond the delete guard (`max_delete`), after a pass was refused'
complete -c kbsync -n "__fish_kbsync_using_subcommand retry" -s q -l quiet -d 'Log warnings and errors only, and show no progress (with --reconcile: a bar on a terminal, else a line every --progress-secs)'
complete -c kbsync -n "__fish_kbsync_using_subcommand retry" -s v -l verbose -d 'Log more: -v debug, -vv trace (kbsync\'s own events). --log, when given, wins; else -v/-q win over RUST_LOG'
complete -c kbsync -n "__fish_kbsync_using_subcommand retry" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kbsync -n "__fish_kbsync_using_subcommand completions" -s c -l config -d 'Configuration file (TOML)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand completions" -l job -d 'Only run these jobs (repeatable)' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand completions" -l log -d 'Log filter, e.g. `debug` or `kbsync=trace`: wins over -v, -q and RUST_LOG' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand completions" -l log-file -d 'Append the log to this file instead of writing it to stderr (in --log-format; `auto` is plain text there)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand completions" -l log-format -d 'Log format' -r -f -a "auto\t'journald when stderr is the journal, colours on a terminal, plain text otherwise'
human\t''
plain\t''
journald\t''
json\t''"
complete -c kbsync -n "__fish_kbsync_using_subcommand completions" -s q -l quiet -d 'Log warnings and errors only, and show no progress (with --reconcile: a bar on a terminal, else a line every --progress-secs)'
complete -c kbsync -n "__fish_kbsync_using_subcommand completions" -s v -l verbose -d 'Log more: -v debug, -vv trace (kbsync\'s own events). --log, when given, wins; else -v/-q win over RUST_LOG'
complete -c kbsync -n "__fish_kbsync_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kbsync -n "__fish_kbsync_using_subcommand man" -s c -l config -d 'Configuration file (TOML)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand man" -l job -d 'Only run these jobs (repeatable)' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand man" -l log -d 'Log filter, e.g. `debug` or `kbsync=trace`: wins over -v, -q and RUST_LOG' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand man" -l log-file -d 'Append the log to this file instead of writing it to stderr (in --log-format; `auto` is plain text there)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand man" -l log-format -d 'Log format' -r -f -a "auto\t'journald when stderr is the journal, colours on a terminal, plain text otherwise'
human\t''
plain\t''
journald\t''
json\t''"
complete -c kbsync -n "__fish_kbsync_using_subcommand man" -s q -l quiet -d 'Log warnings and errors only, and show no progress (with --reconcile: a bar on a terminal, else a line every --progress-secs)'
complete -c kbsync -n "__fish_kbsync_using_subcommand man" -s v -l verbose -d 'Log more: -v debug, -vv trace (kbsync\'s own events). --log, when given, wins; else -v/-q win over RUST_LOG'
complete -c kbsync -n "__fish_kbsync_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kbsync -n "__fish_kbsync_using_subcommand forget" -s c -l config -d 'Configuration file (TOML)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand forget" -l job -d 'Only run these jobs (repeatable)' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand forget" -l log -d 'Log filter, e.g. `debug` or `kbsync=trace`: wins over -v, -q and RUST_LOG' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand forget" -l log-file -d 'Append the log to this file instead of writing it to stderr (in --log-format; `auto` is plain text there)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand forget" -l log-format -d 'Log format' -r -f -a "auto\t'journald when stderr is the journal, colours on a terminal, plain text otherwise'
human\t''
plain\t''
journald\t''
json\t''"
complete -c kbsync -n "__fish_kbsync_using_subcommand forget" -s q -l quiet -d 'Log warnings and errors only, and show no progress (with --reconcile: a bar on a terminal, else a line every --progress-secs)'
complete -c kbsync -n "__fish_kbsync_using_subcommand forget" -s v -l verbose -d 'Log more: -v debug, -vv trace (kbsync\'s own events). --log, when given, wins; else -v/-q win over RUST_LOG'
complete -c kbsync -n "__fish_kbsync_using_subcommand forget" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and not __fish_seen_subcommand_from validate help" -s c -l config -d 'Configuration file (TOML)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and not __fish_seen_subcommand_from validate help" -l job -d 'Only run these jobs (repeatable)' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and not __fish_seen_subcommand_from validate help" -l log -d 'Log filter, e.g. `debug` or `kbsync=trace`: wins over -v, -q and RUST_LOG' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and not __fish_seen_subcommand_from validate help" -l log-file -d 'Append the log to this file instead of writing it to stderr (in --log-format; `auto` is plain text there)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and not __fish_seen_subcommand_from validate help" -l log-format -d 'Log format' -r -f -a "auto\t'journald when stderr is the journal, colours on a terminal, plain text otherwise'
human\t''
plain\t''
journald\t''
json\t''"
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and not __fish_seen_subcommand_from validate help" -s q -l quiet -d 'Log warnings and errors only, and show no progress (with --reconcile: a bar on a terminal, else a line every --progress-secs)'
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and not __fish_seen_subcommand_from validate help" -s v -l verbose -d 'Log more: -v debug, -vv trace (kbsync\'s own events). --log, when given, wins; else -v/-q win over RUST_LOG'
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and not __fish_seen_subcommand_from validate help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and not __fish_seen_subcommand_from validate help" -f -a "validate" -d 'Report every error in the configuration at once (file:line:column, key path, "did you mean"), as the service would load it; exit 0 when it is valid, 2 otherwise. Nothing is sent anywhere'
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and not __fish_seen_subcommand_from validate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and __fish_seen_subcommand_from validate" -s c -l config -d 'Configuration file (TOML)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and __fish_seen_subcommand_from validate" -l job -d 'Only run these jobs (repeatable)' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and __fish_seen_subcommand_from validate" -l log -d 'Log filter, e.g. `debug` or `kbsync=trace`: wins over -v, -q and RUST_LOG' -r
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and __fish_seen_subcommand_from validate" -l log-file -d 'Append the log to this file instead of writing it to stderr (in --log-format; `auto` is plain text there)' -r -F
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and __fish_seen_subcommand_from validate" -l log-format -d 'Log format' -r -f -a "auto\t'journald when stderr is the journal, colours on a terminal, plain text otherwise'
human\t''
plain\t''
journald\t''
json\t''"
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and __fish_seen_subcommand_from validate" -s q -l quiet -d 'Log warnings and errors only, and show no progress (with --reconcile: a bar on a terminal, else a line every --progress-secs)'
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and __fish_seen_subcommand_from validate" -s v -l verbose -d 'Log more: -v debug, -vv trace (kbsync\'s own events). --log, when given, wins; else -v/-q win over RUST_LOG'
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and __fish_seen_subcommand_from validate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "validate" -d 'Report every error in the configuration at once (file:line:column, key path, "did you mean"), as the service would load it; exit 0 when it is valid, 2 otherwise. Nothing is sent anywhere'
complete -c kbsync -n "__fish_kbsync_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kbsync -n "__fish_kbsync_using_subcommand help; and not __fish_seen_subcommand_from status check retry completions man forget config help" -f -a "status" -d 'Per job: items tracked, pending and failed (with reasons), last sync, and a root that is missing or looks unmounted. Reads the state file; safe while the service runs'
complete -c kbsync -n "__fish_kbsync_using_subcommand help; and not __fish_seen_subcommand_from status check retry completions man forget config help" -f -a "check" -d 'Compare the knowledge base with the source and the state file: print every difference (drift found by the upstream audit, and what a pass would do). Changes nothing; exits 1 when there is any, or when a job\'s root is missing: its upstream is still compared with the state file, but nothing vouches for its source'
complete -c kbsync -n "__fish_kbsync_using_subcommand help; and not __fish_seen_subcommand_from status check retry completions man forget config help" -f -a "retry" -d 'Try again now what failed: steps the upstream refused (parked until the file changes) and steps waiting out a backoff. Safe while the service runs; it picks them up within seconds'
complete -c kbsync -n "__fish_kbsync_using_subcommand help; and not __fish_seen_subcommand_from status check retry completions man forget config help" -f -a "completions" -d 'Print a shell completion script: `kbsync completions bash > /usr/share/bash-completion/completions/kbsync`'
complete -c kbsync -n "__fish_kbsync_using_subcommand help; and not __fish_seen_subcommand_from status check retry completions man forget config help" -f -a "man" -d 'Print the manual page (roff): `kbsync man > /usr/share/man/man1/kbsync.1`'
complete -c kbsync -n "__fish_kbsync_using_subcommand help; and not __fish_seen_subcommand_from status check retry completions man forget config help" -f -a "forget" -d 'Drop from the state file every row of the jobs named with `--job`, which must be gone from the configuration. Their upstream records stay as they are. Needs the state file to itself (stop the service first)'
complete -c kbsync -n "__fish_kbsync_using_subcommand help; and not __fish_seen_subcommand_from status check retry completions man forget config help" -f -a "config" -d 'Work with the configuration file'
complete -c kbsync -n "__fish_kbsync_using_subcommand help; and not __fish_seen_subcommand_from status check retry completions man forget config help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kbsync -n "__fish_kbsync_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "validate" -d 'Report every error in the configuration at once (file:line:column, key path, "did you mean"), as the service would load it; exit 0 when it is valid, 2 otherwise. Nothing is sent anywhere'
