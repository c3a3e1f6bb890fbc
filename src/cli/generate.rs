//! `generate`: shell completions and man pages, made from the command line's definition.
//! Calls `super` (`Cli`, `VERSION`, `Exit`, `report`, `GenerateCommand`); no sibling.

use std::path::Path;

use crate::error::Error;

use super::{Cli, Exit, GenerateCommand, VERSION, report};

/// `wsus-edge generate …`.
pub(super) fn generate(command: GenerateCommand) -> Exit {
    use clap::CommandFactory as _;
    let mut cli = Cli::command();
    match command {
        GenerateCommand::Completions { shell } => {
            clap_complete::generate(shell, &mut cli, "wsus-edge", &mut std::io::stdout());
            Exit::Ok
        }
        GenerateCommand::Man { dir } => match write_man_pages(&cli, &dir) {
            Ok(n) => {
                println!("wrote {n} man pages into {}", dir.display());
                Exit::Ok
            }
            Err(e) => report(Err(e)),
        },
    }
}

/// `wsus-edge.1` and `wsus-edge-SUB.1` (and deeper, `wsus-edge-cert-node.1`) into `dir`.
fn write_man_pages(cli: &clap::Command, dir: &Path) -> Result<usize, Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut written = 0;
    let mut pending = vec![(cli.clone().version(VERSION), "wsus-edge".to_owned())];
    while let Some((command, name)) = pending.pop() {
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            let sub_name = format!("{name}-{}", sub.get_name());
            pending.push((sub.clone().name(sub_name.clone()), sub_name));
        }
        let path = dir.join(format!("{name}.1"));
        let mut file = std::fs::File::create(&path)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        clap_mangen::Man::new(command)
            .render(&mut file)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        written += 1;
    }
    Ok(written)
}
