"""glue-lora: the GLUE experiments of the LoRA paper on the Hugging Face stack."""

__version__ = "0.1.0"
