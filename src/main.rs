//! `furymesh`: parse the command line, run it, report a failure as one line.

use std::io::Write;

fn main() {
    let cli = furymesh::cli::Cli::parse_noting_environment();
    let daemon = matches!(cli.command, furymesh::cli::Command::Seed(_));
    furymesh::service::init_logging(cli.log_format, daemon);
    let code = match furymesh::cli::run(cli) {
        Ok(code) => code,
        // The reader of stdout went away (`furymesh demo | head -3`): stop quietly.
        Err(e) if e.is::<furymesh::output::StdoutClosed>() => 0,
        Err(e) => {
            // One line: the error and its causes, outermost first, skipping causes the
            // message above them already spells out.
            let mut line = String::new();
            for cause in e.chain().map(ToString::to_string) {
                if !line.contains(&cause) {
                    line = if line.is_empty() { cause } else { format!("{line}: {cause}") };
                }
            }
            // Not eprintln!: a closed stderr must not turn the error into a panic.
            let _ = writeln!(std::io::stderr().lock(), "furymesh: {line}");
            1
        }
    };
    std::process::exit(code);
}
