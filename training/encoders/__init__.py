"""Text encoders: exporting the pretrained encoders into the model repository (`shelfwise export`,
which also installs the CTR head's prior and the relevance ranker), converting them to ONNX
(multilingual E5, the Universal Sentence Encoder), int8 quantisation and fine-tuning."""
