// Reads a JSON array of Kubernetes objects on stdin; prints, as a JSON array, for each one
// either null (valid against its published schema) or the validator's message. Knative
// Serving's Service from @kubernetes-models/knative, Kubernetes' own kinds from
// kubernetes-models: both generated from the projects' OpenAPI schemas, checked offline.
import { Service } from "@kubernetes-models/knative/serving.knative.dev/v1/Service";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { Secret } from "kubernetes-models/v1/Secret";

const kinds = {
  "serving.knative.dev/v1 Service": Service,
  "networking.k8s.io/v1 NetworkPolicy": NetworkPolicy,
  "v1 Secret": Secret,
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((object) => {
  const model = kinds[`${object.apiVersion} ${object.kind}`];
  if (!model) return `no schema here for ${object.apiVersion} ${object.kind}`;
  try {
    new model(object).validate();
    return null;
  } catch (error) {
    return String(error.message);
  }
});
process.stdout.write(JSON.stringify(results));
