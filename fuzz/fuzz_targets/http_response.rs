//! loadgen's HTTP response reader: any bytes, cut anywhere, read the same
//! responses (or the same error) as the whole input at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocols::http::response::ResponseReader;

mod split;

fn read(chunks: &[&[u8]]) -> (Vec<String>, Option<String>) {
    let mut reader = ResponseReader::new();
    let mut done = Vec::new();
    for chunk in chunks {
        if let Err(e) = reader.feed(chunk, &mut done) {
            return (
                done.iter().map(|r| format!("{r:?}")).collect(),
                Some(e.to_string()),
            );
        }
    }
    let end = reader.finish(&mut done).err().map(|e| e.to_string());
    (done.iter().map(|r| format!("{r:?}")).collect(), end)
}

fuzz_target!(|data: &[u8]| {
    let Some(case) = split::case(data) else {
        return;
    };
    assert_eq!(read(&case.chunks), read(&[case.whole]));
});
