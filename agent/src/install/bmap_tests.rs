use super::*;

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A map as bmaptool 3.6 writes it (comments trimmed), without the file checksum.
fn map(image_size: u64, blocks: u64, mapped: u64, kind: &str, ranges: &str) -> String {
    format!(
        "<?xml version=\"1.0\" ?>\n<!-- copies <MappedBlocksCount> blocks -->\n\
         <bmap version=\"2.0\">\n    <ImageSize> {image_size} </ImageSize>\n\
         <BlockSize> 4096 </BlockSize>\n    <BlocksCount> {blocks} </BlocksCount>\n\
         <MappedBlocksCount> {mapped}    </MappedBlocksCount>\n\
         <ChecksumType> {kind} </ChecksumType>\n    <BlockMap>\n{ranges}    </BlockMap>\n</bmap>\n"
    )
}

fn range(r: &str) -> String {
    format!(
        "        <Range chksum=\"{}\"> {r} </Range>\n",
        "ab".repeat(32)
    )
}

/// `bmaptool create` (bmap-tools 3.6) of an 8,388,000-byte sparse file with data in blocks
/// 256, 1000-1004 and the short last block 2047.
#[test]
fn reads_bmaptools_own_output() {
    let text = include_str!("../../tests/fixtures/small.bmap");
    let bmap = parse(text).unwrap();
    assert_eq!((bmap.image_size, bmap.block_size), (8_388_000, 4096));
    assert_eq!((bmap.blocks_count, bmap.mapped_blocks), (2048, 7));
    let spans: Vec<_> = bmap.ranges.iter().map(|r| (r.start, r.end)).collect();
    assert_eq!(
        spans,
        [
            (256 * 4096, 257 * 4096),
            (1000 * 4096, 1005 * 4096),
            (2047 * 4096, 8_388_000)
        ]
    );
    // sha256 of the first range's 4 KiB: "hello" at its start, zeros after.
    let mut block = vec![0u8; 4096];
    block[..5].copy_from_slice(b"hello");
    assert_eq!(bmap.ranges[0].sha256[..], Sha256::digest(&block)[..]);
    // One changed digit breaks the file's own checksum.
    let bent = text.replacen("b15056c9", "b15056c8", 1);
    assert!(matches!(parse(&bent), Err(BmapError::FileChecksum { .. })));
}

#[test]
fn reads_ranges_in_bytes() {
    let text = map(
        8 * 1024 * 1024 - 100,
        2048,
        7,
        "sha256",
        &(range("0") + &range("1000-1004") + &range("2047")),
    );
    let bmap = parse(&text).unwrap();
    assert_eq!(bmap.image_size, 8 * 1024 * 1024 - 100);
    assert_eq!(bmap.block_size, 4096);
    let spans: Vec<_> = bmap.ranges.iter().map(|r| (r.start, r.end)).collect();
    // The last block is cut at the image's end.
    assert_eq!(
        spans,
        [
            (0, 4096),
            (1000 * 4096, 1005 * 4096),
            (2047 * 4096, 8 * 1024 * 1024 - 100)
        ]
    );
    assert_eq!(bmap.ranges[0].sha256, [0xab; 32]);
    assert_eq!(bmap.mapped_bytes(), 6 * 4096 + 4096 - 100);
}

#[test]
fn refuses_what_bmaptool_would_not_write() {
    let ok = |r: &str, mapped| map(8 * 1024 * 1024, 2048, mapped, "sha256", r);
    let cases: Vec<(String, &str)> = vec![
        (
            ok(&(range("5-9") + &range("9-10")), 7),
            "out of order or overlapping",
        ),
        (
            ok(&(range("5-9") + &range("1-2")), 7),
            "out of order or overlapping",
        ),
        (
            ok(&range("2040-2048"), 9),
            "ends past the image's 2048 blocks",
        ),
        (ok(&range("9-5"), 5), "is not N or N-M"),
        (ok(&range("x"), 1), "is not N or N-M"),
        (
            ok(&range("1-2"), 3),
            "MappedBlocksCount> 3 but the ranges hold 2",
        ),
        (
            map(8 * 1024 * 1024, 2048, 1, "sha1", &range("1")),
            "checksum type \"sha1\"",
        ),
        (
            map(8 * 1024 * 1024, 2047, 1, "sha256", &range("1")),
            "<BlocksCount> 2047",
        ),
        (
            map(8 * 1024 * 1024, 2048, 1, "sha256", "<Range> 1 </Range>"),
            "has no sha256 chksum",
        ),
        (
            ok(&range("1"), 1).replace("version=\"2.0\"", "version=\"1.4\""),
            "format version \"1.4\"",
        ),
        (
            ok(&range("1"), 1).replace("<BlockSize> 4096", "<BlockSize> 4095"),
            "block size 4095",
        ),
        (
            ok(&range("1"), 1).replace("<ImageSize> 8388608 </ImageSize>", ""),
            "no <ImageSize>",
        ),
        (
            ok(&range("1"), 1).replace("<ImageSize>", "<ImageSize> 1 </ImageSize><ImageSize>"),
            "<ImageSize> given twice",
        ),
        ("<bmap version=\"2.0\"><ImageSize>".into(), "no <"),
        ("<html></html>".into(), "no <bmap> element"),
    ];
    for (text, want) in cases {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} does not say {want:?}");
    }
}

#[test]
fn checks_the_file_checksum() {
    let text = map(8192, 2, 1, "sha256", &range("1"));
    let with = |sum: &str| {
        text.replace(
            "<BlockMap>",
            &format!("<BmapFileChecksum> {sum} </BmapFileChecksum><BlockMap>"),
        )
    };
    let sum = hex::encode(Sha256::digest(with(ZERO).as_bytes()));
    assert!(parse(&with(&sum)).is_ok());
    let wrong = "1".repeat(64);
    let err = parse(&with(&wrong)).unwrap_err();
    assert!(matches!(err, BmapError::FileChecksum { .. }), "{err}");
}
