"""Config kwargs of real models' shapes, for benches that time random weights (no packaged model needed)."""

SMOLLM2_135M = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
    num_key_value_heads=3, rope_theta=100000.0, max_position_embeddings=8192, tie_word_embeddings=True,
    rms_norm_eps=1e-5, hidden_act="silu",
)  # fmt: skip
QWEN25_15B = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_theta=1e6, tie_word_embeddings=True)  # fmt: skip
QWEN25_05B = dict(QWEN25_15B, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14)
