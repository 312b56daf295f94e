"""CIFAR-10 in: download (http, https, file), the official python layout, preprocessing to float32."""
