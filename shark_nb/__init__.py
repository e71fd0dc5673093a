"""shark_nb: the Shark AI image API (openai/gpt-image-2) as a first-class Jupyter citizen."""
