use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

pub fn run(shell: Shell) {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "xeroctl", &mut std::io::stdout());
}
