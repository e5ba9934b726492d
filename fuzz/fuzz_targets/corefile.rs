//! The node-cache Corefile reader: tokenizer, parser and translation into the native config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodelocal_dns::nodecache::{TranslateOptions, parse, translate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse(text, "Corefile");
    if let Ok(translation) = translate(text, "Corefile", &TranslateOptions::default()) {
        // What translation produced is a config the native reader accepts as it is.
        let yaml = translation.config.to_yaml();
        nodelocal_dns::config::Config::from_yaml(&yaml, "translated")
            .expect("a translated config reads back");
    }
});
