//! `shoal man`: man pages generated from the same definitions as `--help`.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::Cli;

/// Writes `shoal.1` and `shoal-<command>.1` for every command into `dir`.
pub fn write(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let root = Cli::command();
    let mut pages = vec![("shoal".to_string(), root.clone())];
    for sub in root.get_subcommands() {
        let name = format!("shoal-{}", sub.get_name());
        // A page's title is its command's name: `shoal-assign`, as `man` finds it.
        let titled = sub.clone().name(name.clone());
        pages.push((name, titled));
    }
    for (name, command) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .with_context(|| format!("rendering {name}.1"))?;
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    }
    outln!("man pages written to {}", dir.display());
    Ok(())
}
