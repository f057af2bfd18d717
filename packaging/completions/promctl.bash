# bash completion for promctl(1), the client of promd(8).
# Installed as /usr/share/bash-completion/completions/promctl.

# The groups of the running promd (none if it does not answer within 2 seconds).
_promctl_groups()
{
    timeout 2 promctl status --json 2>/dev/null |
        sed -n 's/^ *"name": *"\([^"]*\)".*/\1/p'
}

_promctl()
{
    local cur prev words cword
    _init_completion || return

    local commands="status promote demote maintenance reset watch import-prom help"

    # The command: the first word after promctl that is not an option.
    local i command="" nargs=0
    for ((i = 1; i < cword; i++)); do
        if [[ -z $command ]]; then
            [[ ${words[i]} != -* ]] && command=${words[i]}
        elif [[ ${words[i]} != -* ]]; then
            ((nargs++))
        fi
    done

    if [[ -z $command ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W '--help --version' -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
        return
    fi

    case $command in
        status)
            if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W '--json --help' -- "$cur"))
            elif ((nargs == 0)); then
                COMPREPLY=($(compgen -W "$(_promctl_groups)" -- "$cur"))
            fi
            ;;
        promote | demote | reset)
            if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W '--help' -- "$cur"))
            elif ((nargs == 0)); then
                COMPREPLY=($(compgen -W "$(_promctl_groups)" -- "$cur"))
            fi
            ;;
        maintenance)
            if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W '--help' -- "$cur"))
            elif ((nargs == 0)); then
                COMPREPLY=($(compgen -W "$(_promctl_groups)" -- "$cur"))
            elif ((nargs == 1)); then
                COMPREPLY=($(compgen -W 'on off' -- "$cur"))
            fi
            ;;
        watch)
            [[ $cur == -* ]] && COMPREPLY=($(compgen -W '--help' -- "$cur"))
            ;;
        import-prom)
            case $prev in
                --replica)
                    return
                    ;;
                --out)
                    _filedir -d
                    return
                    ;;
            esac
            if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W '--replica --out --help' -- "$cur"))
            else
                _filedir json
            fi
            ;;
        help)
            ((nargs == 0)) && COMPREPLY=($(compgen -W "${commands% help}" -- "$cur"))
            ;;
    esac
} &&
    complete -F _promctl promctl

# ex: filetype=sh
