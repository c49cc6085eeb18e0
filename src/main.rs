fn main() {
    // A panic is forgec's bug: say so plainly, without a backtrace, and exit non-zero.
    std::panic::set_hook(Box::new(|info| {
        // A closed pipe (`forgec ... | head`) is not a bug: stop quietly.
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(|s| s.as_str())
            .unwrap_or("");
        if text.contains("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(0);
        }
        let loc = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("error: internal error in forgec{loc}: {msg}\nerror: this is a bug in forgec, not in your model; please report it with the model file");
    }));
    let cli = forgec::cli::parse();
    let code = std::panic::catch_unwind(|| forgec::cli::main_with(cli)).unwrap_or(101);
    std::process::exit(code);
}
