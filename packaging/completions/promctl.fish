# fish completion for promctl(1), the client of promd(8).
# Installed as /usr/share/fish/vendor_completions.d/promctl.fish.

# The groups of the running promd (none if it does not answer within 2 seconds).
function __promctl_groups
    timeout 2 promctl status --json 2>/dev/null | string replace -rf '^\s*"name":\s*"([^"]*)".*' '$1'
end

set -l __promctl_commands status promote demote maintenance reset watch import-prom help

complete -c promctl -f
complete -c promctl -n "not __fish_seen_subcommand_from $__promctl_commands" -s h -l help -d 'Show the usage'
complete -c promctl -n "not __fish_seen_subcommand_from $__promctl_commands" -s V -l version -d 'Show the version'

complete -c promctl -n "not __fish_seen_subcommand_from $__promctl_commands" -a status -d 'Show roles, leader, term and members'
complete -c promctl -n "not __fish_seen_subcommand_from $__promctl_commands" -a promote -d 'Make this host the active one in GROUP'
complete -c promctl -n "not __fish_seen_subcommand_from $__promctl_commands" -a demote -d 'Hand GROUP over to the best other host'
complete -c promctl -n "not __fish_seen_subcommand_from $__promctl_commands" -a maintenance -d 'Pause (on) or resume (off) failover of GROUP'
complete -c promctl -n "not __fish_seen_subcommand_from $__promctl_commands" -a reset -d "Clear this host's failed state in GROUP"
complete -c promctl -n "not __fish_seen_subcommand_from $__promctl_commands" -a watch -d 'Print role changes as they happen'
complete -c promctl -n "not __fish_seen_subcommand_from $__promctl_commands" -a import-prom -d 'Convert a PROM/HAL config.json'
complete -c promctl -n "not __fish_seen_subcommand_from $__promctl_commands" -a help -d 'Show the usage of a command'

# Every command takes --help.
complete -c promctl -n "__fish_seen_subcommand_from $__promctl_commands" -s h -l help -d 'Show the usage'

# status [GROUP] [--json]
complete -c promctl -n '__fish_seen_subcommand_from status' -l json -d 'Print one JSON document'
complete -c promctl -n '__fish_seen_subcommand_from status; and test (count (commandline -opc)) -le 2' -a '(__promctl_groups)' -d 'Group'

# promote|demote|reset GROUP
complete -c promctl -n '__fish_seen_subcommand_from promote demote reset; and test (count (commandline -opc)) -eq 2' -a '(__promctl_groups)' -d 'Group'

# maintenance GROUP on|off
complete -c promctl -n '__fish_seen_subcommand_from maintenance; and test (count (commandline -opc)) -eq 2' -a '(__promctl_groups)' -d 'Group'
complete -c promctl -n '__fish_seen_subcommand_from maintenance; and test (count (commandline -opc)) -eq 3' -a 'on off'

# import-prom CONFIG.json --replica ID [--out DIR]
complete -c promctl -n '__fish_seen_subcommand_from import-prom' -l replica -x -d 'The replica id this host runs'
complete -c promctl -n '__fish_seen_subcommand_from import-prom' -l out -r -a '(__fish_complete_directories)' -d 'Folder for the files'
complete -c promctl -n '__fish_seen_subcommand_from import-prom' -F

# help COMMAND
complete -c promctl -n '__fish_seen_subcommand_from help; and test (count (commandline -opc)) -eq 2' -a "$__promctl_commands"
