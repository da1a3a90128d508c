"""FiT3D: lift features into feature Gaussians (Stage I), fine-tune the ViT on their
renderings (Stage II), and the evaluations that compare original and fine-tuned features."""
