"""Text channels (text_meta, text_transcript, text_fused) on top of any text Backend, and sample texts."""
