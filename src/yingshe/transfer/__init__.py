"""Transfer learning and feature mapping: fine-tune pretrained backbones, embed images, search
and draw the feature space. Everything here reads models through the feature/head interface."""
